"""The admin page in a real browser (Debian's chromium, driven by playwright): sign in, find a
diverged row, repair it, see it turn in_sync; the page, the API and the CLI agree on the counts;
the session cookie and the page are locked down, and no contact data is shown.

Needs /usr/bin/chromium (`apt install chromium`); skipped without it, unless
CONSENT_GATEWAY_REQUIRE_BROWSER is set (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.demo import demo_app, demo_settings
from tests.live import served
from tests.processes import free_port

CHROMIUM = "/usr/bin/chromium"
TOKEN = "admin-page-token-0123456789"
EMAIL = "ana@example.com"
DECISION: dict[str, Any] = {
    "subject": {"id": "cust-42", "email": EMAIL, "phone": "+14155550100"},
    "purposes": {"email_marketing": "granted", "sms_marketing": "granted"},
    "tcf_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
    "occurred_at": "2026-11-23T10:00:00Z",
}
WIX = "/simulators/wix/marketing-consent/v1/marketing-consent"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not shutil.which(CHROMIUM):
    if os.environ.get("CONSENT_GATEWAY_REQUIRE_BROWSER"):
        pytest.fail(f"{CHROMIUM} is missing: `apt install chromium`", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing: `apt install chromium` to drive the admin page", allow_module_level=True)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The demo app (simulators mounted, worker running) with Wix on report_only, so a revoke
    behind the gateway's back stays diverged until an admin acts."""
    monkeypatch.chdir(tmp_path)
    port = free_port()
    settings = demo_settings(f"http://127.0.0.1:{port}", TOKEN)
    settings.providers["wix"]["drift_policy"] = "report_only"
    app = demo_app("127.0.0.1", port, TOKEN, settings)
    with served(app, port) as base:
        yield base


def diverge(base: str) -> dict[str, int]:
    """A synced subject, then an unsubscribe at Wix the gateway is not told of, read back by a run;
    returns the API's counts."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=30) as api:
        assert api.post("/v1/consents?wait=10", json=DECISION, headers=auth).status_code == 200
        revoke = {
            "details": {"type": "EMAIL", "email": EMAIL},
            "lastRevokeActivity": {"updatedDate": "2026-11-23T11:00:00Z"},
        }
        assert (
            api.post(f"{WIX}/remove", json=revoke, headers={"Authorization": "k", "wix-site-id": "s"}).status_code
            == 200
        )
        run = api.post("/v1/reconciliation/runs", json={}, headers=auth).json()
        for _ in range(100):
            if api.get(f"/v1/reconciliation/runs/{run['id']}", headers=auth).json()["status"] == "done":
                break
            time.sleep(0.1)
        counts: dict[str, int] = api.get("/v1/reconciliation", headers=auth).json()["counts"]
        return counts


def cli_counts(tmp_path: Path) -> dict[str, int]:
    config = tmp_path / "cli.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "consent-gateway-demo.db"}"\n'
        '[providers.masivo]\napi_key = "not-used-0123"\nbase_url = "http://127.0.0.1:9"\n'
        '[providers.wix]\napi_key = "not-used-0123"\nsite_id = "s"\nbase_url = "http://127.0.0.1:9"\n'
        '[providers.intempt]\napi_key = "not.used"\norg = "o"\nproject = "p"\nbase_url = "http://127.0.0.1:9"\n'
    )
    shown = CliRunner().invoke(cli, ["reconcile", "--config", str(config), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    counts: dict[str, int] = json.loads(shown.stdout)["counts"]
    return counts


def test_an_admin_finds_a_diverged_row_and_repairs_it(live: str, tmp_path: Path) -> None:
    api_counts = diverge(live)
    assert api_counts["diverged"] == 1
    assert cli_counts(tmp_path) == api_counts, "the CLI and the API show the same counts"
    artifacts = screenshots()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.goto(f"{live}/admin/")
        assert page.url.endswith("/admin/login"), "signed out: to the sign-in form"
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live}/admin/")

        page_counts = {s: int(page.inner_text(f'[data-count="all-{s}"]')) for s in api_counts}
        assert page_counts == api_counts, "the page shows the same counts as the API"
        assert page.inner_text('[data-count="wix-diverged"]') == "1"
        row = page.locator('tr.row[data-provider="wix"]')
        assert "EMAIL.state" in row.inner_text() and EMAIL not in page.content()

        row.locator("a").click()
        page.wait_for_url(f"{live}/admin/subjects/cust-42")
        assert page.inner_text('[data-status="wix"]') == "diverged"
        page.screenshot(path=str(artifacts / "admin-diverged.png"), full_page=True)
        page.click('[data-action="repush-wix"]')
        page.wait_for_selector(".flash")
        for _ in range(50):
            if page.inner_text('[data-status="wix"]') == "in_sync":
                break
            page.wait_for_timeout(100)
            page.reload()
        assert page.inner_text('[data-status="wix"]') == "in_sync"
        assert EMAIL not in page.content() and "+14155550100" not in page.content()
        page.screenshot(path=str(artifacts / "admin-repaired.png"), full_page=True)

        [cookie] = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
        response = page.request.get(f"{live}/admin/")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        forged = page.request.post(f"{live}/admin/subjects/cust-42/repush", form={"provider": "wix"})
        assert forged.status == 403, "a POST without the session's CSRF token is refused"
        browser.close()
    wix = httpx.get(f"{live}/simulators/wix/_inspect").json()["state"]["consents"].values()
    assert [c["state"] for c in wix if c["details"].get("email") == EMAIL] == ["CONFIRMED"]


def screenshots() -> Path:
    """Where the screenshots are kept for people to look at: $CONSENT_GATEWAY_ARTIFACTS, else
    .pytest-artifacts/ in the checkout (ignored by git), left there after the run."""
    folder = Path(os.environ.get("CONSENT_GATEWAY_ARTIFACTS") or Path(__file__).parents[2] / ".pytest-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def failing_at_masivo(base: str, count: int) -> None:
    """``count`` more subjects whose Masivo delivery is dead (Masivo refuses every push): rows that
    need attention, more than one page holds. No addresses: nothing for Wix, whose 200 requests a
    minute would otherwise hold the admin's repair behind theirs."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=60) as api:
        assert api.post("/simulators/masivo/_faults", json={"error_rate": 1, "status": 400}).status_code == 200
        decisions = [DECISION | {"subject": {"id": f"bulk-{n:03d}"}} for n in range(count)]
        assert api.post("/v1/consents:batch", json={"decisions": decisions}, headers=auth).status_code == 200
        for _ in range(600):
            counts = api.get("/v1/reconciliation?provider=masivo", headers=auth).json()["provider_counts"]["masivo"]
            if counts["failed"] == count:
                break
            time.sleep(0.1)
        assert counts["failed"] == count, counts
        assert api.post("/simulators/masivo/_faults", json={"error_rate": 0}).status_code == 200


def release_wix(base: str) -> None:
    """Once the held push to Wix waits on its retry ladder, Wix answers again and the push is due
    now: the page turns in_sync when the push lands, not when a latency runs out."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=30, headers=auth) as api:
        for _ in range(600):
            waiting = api.get("/v1/deliveries?subject=cust-42&provider=wix&status=retrying").json()["items"]
            if waiting:
                break
            time.sleep(0.1)
        assert waiting, "the held push never reached its retry ladder"
        assert api.post("/simulators/wix/_faults", json={"error_rate": 0}).status_code == 200
        assert api.post(f"/v1/deliveries/{waiting[0]['id']}/retry").status_code == 202


def test_an_admin_searches_reads_repairs_pages_and_runs_without_reloading(live: str, tmp_path: Path) -> None:
    """The admin's path through the page: find a subject by id, read it as one table (purposes ×
    providers), push it again and watch the row turn pending, then in_sync, with no reload; page
    through more than 200 rows; start a run and watch it finish. Screenshots at 1400 and 800 px."""
    diverge(live)
    failing_at_masivo(live, 230)
    artifacts = screenshots()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{live}/admin/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live}/admin/")

        assert page.inner_text("[data-position]") == "rows 1–50 of 231"
        never = page.locator('tr.row[data-subject="bulk-000"]').inner_text()
        assert "never acknowledged" in never and "→ null" not in never, never
        page.screenshot(path=str(artifacts / "admin-dashboard-1400.png"), full_page=True)
        seen = set(page.locator("tr.row").evaluate_all("rows => rows.map(r => r.dataset.subject + r.dataset.provider)"))
        while page.locator('[data-action="next-page"]').count():
            page.click('[data-action="next-page"]')
            rows = page.locator("tr.row").evaluate_all("rows => rows.map(r => r.dataset.subject + r.dataset.provider)")
            assert not seen & set(rows), "a page repeats no row of an earlier one"
            seen |= set(rows)
        assert page.inner_text("[data-position]") == "rows 201–231 of 231" and len(seen) == 231

        page.fill("input[name=subject]", "nobody-here")
        page.click("form.search button")
        assert "No subject 'nobody-here'" in page.inner_text(".flash")
        page.fill("input[name=subject]", "cust-42")
        page.click("form.search button")
        page.wait_for_url(f"{live}/admin/subjects/cust-42")
        cell = page.locator('[data-cell="email_marketing-wix"]')
        assert "differs" in (cell.get_attribute("class") or "")
        assert "wants granted" in cell.inner_text() and "holds denied" in cell.inner_text()
        assert "holds granted" in page.inner_text('[data-cell="email_marketing-masivo"]')
        assert page.inner_text('[data-status="wix"]') == "diverged"
        # the revoke is dated before the subject took the address (this test's fixed dates): not theirs to adopt
        assert "dated before the subject held this address" in page.inner_text('[data-not-adopted="EMAIL"]')
        assert page.locator('[data-action="adopt-wix"]').count() == 0, "no Adopt where nothing can be adopted"
        assert page.locator('[data-action="adopt-masivo"]').count() == 0, "nor where nothing differs"
        assert "session" not in page.inner_text("header") and "signed in with token demo" in page.inner_text("header")
        page.screenshot(path=str(artifacts / "admin-subject-1400.png"), full_page=True)

        httpx.post(f"{live}/simulators/wix/_faults", json={"error_rate": 1, "status": 503})  # held: pending
        page.click('[data-action="repush-wix"]')
        page.wait_for_selector(".flash")
        page.evaluate("window.notReloaded = true")
        expect(page.locator('[data-status="wix"]')).to_have_text("pending")
        release_wix(live)
        expect(page.locator('[data-status="wix"]')).to_have_text("in_sync", timeout=30000)
        assert page.evaluate("window.notReloaded === true"), "the page followed the push by itself"

        page.set_viewport_size({"width": 800, "height": 1000})
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
            "no sideways scroll at 800 px"
        )
        page.screenshot(path=str(artifacts / "admin-subject-800.png"), full_page=True)

        page.goto(f"{live}/admin/")
        page.click('[data-action="start-run"]')
        page.wait_for_selector(".flash")
        page.evaluate("window.notReloaded = true")
        newest = page.locator("table.runs tbody tr").first
        expect(newest.locator(".run-status")).to_have_text("done", timeout=60000)
        assert int(newest.locator(".run-subjects").inner_text()) == 231  # cust-42 and the 230
        assert page.evaluate("window.notReloaded === true"), "the run's progress came without a reload"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(artifacts / "admin-dashboard-800.png"), full_page=True)
        assert EMAIL not in page.content()
        browser.close()

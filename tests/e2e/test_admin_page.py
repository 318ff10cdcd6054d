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
from playwright.sync_api import sync_playwright
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
    artifacts = Path(os.environ.get("CONSENT_GATEWAY_ARTIFACTS", tmp_path))
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

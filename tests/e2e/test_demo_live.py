"""The real thing: `serve --demo` under uvicorn on a loopback port, real worker, real
simulators, real HTTP. A decision lands in all three providers in their own wire formats,
and no secret shows up in logs, problem bodies or the simulators' records."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from gateway.demo import DEMO_DATABASE, demo_app
from tests.live import served
from tests.processes import free_port

TOKEN = "live-demo-token-0123456789"
DECISION: dict[str, Any] = {
    "subject": {"id": "cust-42", "email": "ana@example.com", "phone": "+14155550100"},
    "purposes": {
        "email_marketing": "granted",
        "sms_marketing": "denied",
        "push_notifications": "denied",
        "analytics": "granted",
    },
    "vendors": {"meta": True},
    "tcf_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
    "occurred_at": "2026-11-23T10:00:00Z",
    "source": "web",
    "note": "signup form",
}
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.")


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """Base URL of a running demo server, and the secrets it was configured with."""
    monkeypatch.chdir(tmp_path)
    port = free_port()
    app = demo_app("127.0.0.1", port, TOKEN)
    secrets = [TOKEN, *app.state.gateway.secrets()]
    with served(app, port) as base:
        yield base, secrets


def test_a_decision_lands_in_every_provider_in_its_own_format(
    live: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    base, secrets = live
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        created = client.post("/v1/consents?wait=10", json=DECISION, headers=headers)
        assert created.status_code == 200, created.text
        assert {d["provider"]: d["status"] for d in created.json()["deliveries"]} == {
            "intempt": "succeeded",
            "masivo": "succeeded",
            "wix": "succeeded",
        }

        masivo = client.get("/simulators/masivo/_inspect").json()
        wix = client.get("/simulators/wix/_inspect").json()
        intempt = client.get("/simulators/intempt/_inspect").json()
        rejected = client.post("/v1/consents", json={"subject": {}}, headers=headers)
        unauthorized = client.post("/v1/consents", json=DECISION, headers={"Authorization": "Bearer " + "x" * 20})

    masivo_patch = next(r for r in masivo["requests"] if r["method"] == "PATCH")
    consent = masivo_patch["body"]["consent"]
    assert consent["consent_string"] == DECISION["tcf_string"]
    assert consent["purposes"]["email_marketing"] is True and consent["purposes"]["push_notifications"] is False
    assert consent["purposes"]["coupon_campaigns"] is False, "full state: undecided purposes are not consent"

    wix_bodies = [r["body"] for r in wix["requests"] if r["method"] in {"POST", "PATCH"}]
    states = {b["marketingConsent"]["details"]["type"]: b["marketingConsent"]["state"] for b in wix_bodies}
    assert states == {"EMAIL": "CONFIRMED", "PHONE": "REVOKED"}

    intempt_bodies = [r["body"] for r in intempt["requests"]]
    assert {b["category"]: b["action"] for b in intempt_bodies} == {
        "email": "accept",
        "sms": "reject",
        "push": "reject",
        "analytics": "accept",
    }
    assert all(b["userId"] == "cust-42" and b["validUntil"] == "unlimited" for b in intempt_bodies)

    recorded = "\n".join(
        [
            created.text,
            rejected.text,
            unauthorized.text,
            str(masivo),
            str(wix),
            str(intempt),
            *(record.getMessage() for record in caplog.records),
        ]
    )
    for secret in secrets:
        assert secret not in recorded
    assert not JWT.search(recorded), "the Masivo bearer JWT leaked"
    assert rejected.status_code == 422 and unauthorized.status_code == 401


def contact_forms(value: str) -> list[str]:
    """A contact value as it could appear in a line: as is, and URL-encoded (a query string)."""
    return [value, value.replace("@", "%40").replace("+", "%2B")]


def test_nothing_secret_or_personal_leaks_along_the_whole_path(
    live: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Record, fan out to three providers, a dead letter at Wix, its replay, bad input, metrics:
    every log line written (ours, uvicorn's access log, httpx), every problem body and the metrics
    hold no secret and no email or phone number."""
    base, secrets = live
    headers = {"Authorization": f"Bearer {TOKEN}"}
    email, phone = "lea.martin@example.com", "+14155550177"  # not the example the API's messages give
    signup = {**DECISION, "subject": {"id": "cust-77", "email": email, "phone": phone}}
    revoke = {**signup, "purposes": {"email_marketing": "denied"}, "occurred_at": "2026-11-23T11:00:00Z"}
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.post("/v1/consents?wait=10", json=signup, headers=headers).status_code == 200
        client.post("/simulators/wix/_faults", json={"status": 400, "error_rate": 1.0})
        revoked = client.post("/v1/consents?wait=10", json=revoke, headers=headers).json()
        dead = next(d for d in revoked["deliveries"] if d["provider"] == "wix")
        assert dead["status"] == "dead", dead
        client.post("/simulators/wix/_faults", json={"error_rate": 0})
        assert client.post(f"/v1/deliveries/{dead['id']}/replay", headers=headers).status_code == 202
        for _ in range(200):
            replayed = client.get(f"/v1/deliveries/{dead['id']}", headers=headers).json()
            if replayed["status"] == "succeeded":
                break
            time.sleep(0.05)
        assert replayed["status"] == "succeeded", replayed
        bad = {**DECISION, "subject": {"id": "cust-77", "email": "lea@@example.com", "phone": "+1415555017x"}}
        problems = [
            client.post("/v1/consents", json=bad, headers=headers),
            client.post("/v1/consents", json=DECISION, headers={"Authorization": f"Bearer {TOKEN[:-1]}"}),
            client.get(f"/v1/subjects/{email}", headers=headers),
        ]
        metrics = client.get("/metrics").text
    logged = capsys.readouterr().err
    assert '"delivery_dead"' in logged and "/replay" in logged and "marketing-consent" in logged  # lines were caught
    assert [p.status_code for p in problems] == [422, 401, 404]
    bodies = "\n".join(p.text for p in problems)
    for text, where in ((logged, "logs"), (bodies, "problem bodies"), (metrics, "metrics")):
        for secret in secrets:
            assert secret not in text, f"a secret in the {where}"
        assert not JWT.search(text), f"a JWT in the {where}"
        for contact in (email, phone, "lea@@example.com", "+1415555017x"):
            for form in contact_forms(contact):
                assert form not in text, f"{form} in the {where}"


def test_a_decision_made_today_without_a_tcf_string_reaches_every_provider(live: tuple[str, list[str]]) -> None:
    """The demo builds Masivo's TC string, as config.example.toml does, and Intempt keeps the decision's time."""
    base, _ = live
    today = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    decision = {key: value for key, value in DECISION.items() if key != "tcf_string"} | {
        "subject": {"id": "cust-today", "email": "today@example.com"},
        "occurred_at": today.isoformat(),
    }
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        created = client.post("/v1/consents?wait=10", json=decision)
        assert created.status_code == 200, created.text
        statuses = {d["provider"]: d["status"] for d in created.json()["deliveries"]}
        assert statuses == {"intempt": "succeeded", "masivo": "succeeded", "wix": "succeeded"}, created.text
        masivo = client.get("/simulators/masivo/_inspect").json()["state"]["consents"]["cust-today"]
        intempt = client.get("/simulators/intempt/_inspect").json()["state"]["records"]
    assert masivo["consent_string"].startswith("CQ") and masivo["consent_string"].count(".") == 2
    assert {r["body"]["timestamp"] for r in intempt if r["body"].get("userId") == "cust-today"} == {
        int(today.timestamp())
    }
    assert not any(r["timestamp_replaced"] for r in intempt)


def test_the_cli_on_the_demos_database_sees_what_its_api_sees(live: tuple[str, list[str]]) -> None:
    """README's recipe for admins: `--demo` in the directory where `serve --demo` runs gives the CLI
    the demo's providers, so its drift view holds the API's rows and counts; without it, the CLI
    says what it lacks instead of showing an empty view as if nothing were there."""
    base, _ = live
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.post("/v1/consents?wait=10", json=DECISION).status_code == 200
        other = DECISION | {"subject": {"id": "cust-43", "email": "bo@example.com"}}
        assert client.post("/v1/consents?wait=10", json=other).status_code == 200
        api = client.get("/v1/reconciliation?limit=200").json()
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["reconcile", "--demo", "--format", "json"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    cli = json.loads(shown.stdout)
    assert cli["counts"] == api["counts"] and cli["provider_counts"] == api["provider_counts"]
    assert [(r["subject_id"], r["provider"], r["status"]) for r in cli["items"]] == [
        (r["subject_id"], r["provider"], r["status"]) for r in api["items"]
    ]
    assert len(api["items"]) == 6

    env = {"CONSENT_GATEWAY_DATABASE_URL": DEMO_DATABASE}
    bare = runner.invoke(cli_app, ["reconcile", "--format", "json"], env=env)
    assert "warning: no provider is configured here" in bare.stderr and "--demo" in bare.stderr
    wix = runner.invoke(cli_app, ["subjects", "repush", "cust-42", "--provider", "wix"], env=env)
    assert wix.exit_code != 0 and "configured: none" in wix.output
    anywhere = runner.invoke(cli_app, ["subjects", "repush", "cust-42"], env=env)
    assert anywhere.exit_code == 2 and "no provider is configured: there is nowhere to push" in anywhere.output
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        history = client.get("/v1/subjects/cust-42/history").json()["items"]
    assert [entry["decision"]["source"] for entry in history] == ["web"], "no repair entry that pushes nowhere"


def test_a_revoke_at_the_demos_wix_reaches_masivo_and_intempt_by_webhook(live: tuple[str, list[str]]) -> None:
    """README's walk-through: the demo's Wix simulator sends its signed webhook, no read-back run."""
    base, _ = live
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.post("/v1/consents?wait=10", json=DECISION, headers=headers).status_code == 200
        revoke = {  # the person follows the unsubscribe link after the gateway knew their address
            "details": {"type": "EMAIL", "email": "ana@example.com"},
            "lastRevokeActivity": {"source": "REVOKE_LINK", "updatedDate": datetime.now(UTC).isoformat()},
        }
        wix = {"Authorization": "any", "wix-site-id": "demo"}
        removed = client.post("/simulators/wix/marketing-consent/v1/marketing-consent/remove", json=revoke, headers=wix)
        assert removed.status_code == 200, removed.text
        deadline = time.monotonic() + 20  # a bound for a busy machine, not a speed claim
        while time.monotonic() < deadline:  # the event is marked applied in its own step, after its effect
            newest = client.get("/v1/subjects/cust-42/history?limit=1", headers=headers).json()["items"][0]
            delivered = {d["provider"]: d["status"] for d in newest["deliveries"]}
            events = client.get("/v1/providers/wix/events", headers=headers).json()["items"]
            applied = [event for event in events if event["status"] == "applied"]
            if newest["decision"]["source"] == "provider:wix" and delivered.get("masivo") == "succeeded" and applied:
                break
            time.sleep(0.1)

    assert newest["decision"]["source"] == "provider:wix", newest
    assert newest["decision"]["purposes"] == {"email_marketing": "denied"}
    assert delivered == {"intempt": "succeeded", "masivo": "succeeded", "wix": "skipped"}
    assert [event["outcome"] for event in events if event["status"] == "applied"] == ["cust-42: diverged, adopted"]

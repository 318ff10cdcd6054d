"""``config.example.toml`` works for a decision made today: with only its secrets and base URLs
changed (pointed at the simulators), a decision with a current TC string and one without any
reach all three providers, and Intempt keeps the decision's own time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.registry import simulators_app
from gateway.config import load_settings
from gateway.service import Gateway
from schemas import tcf
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.world import CMP_STRING_2024

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
BASE_URLS = {
    "masivo": "https://app.masivo.ai/api/storefront/v1",
    "wix": "https://www.wixapis.com",
    "intempt": "https://api.intempt.com",
}
TODAY = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)  # the gateway's clock: a TCF string made today starts "CQ"
SECRETS = {
    "MASIVO_API_KEY": "masivo-example-key-0123456789",
    "WIX_API_KEY": "wix-example-key-0123456789",
    "WIX_SITE_ID": "example-site",
    "INTEMPT_API_KEY": "pfx.intempt-example-0123456789",
}


@dataclass
class Deployment:
    gateway: Gateway
    simulators: httpx.AsyncClient  # their /_inspect

    async def held(self, provider: str) -> Any:
        return (await self.simulators.get(f"/{provider}/_inspect")).json()["state"]


@pytest.fixture
async def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Deployment]:
    text = EXAMPLE.read_text(encoding="utf-8")
    for provider, url in BASE_URLS.items():
        assert f'base_url = "{url}"' in text, f"the example's {provider} base_url changed: update this test"
        text = text.replace(f'base_url = "{url}"', f'base_url = "https://sim/{provider}"')
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONSENT_GATEWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'example.db'}")
    transport = httpx.ASGITransport(app=simulators_app())
    gateway = Gateway(load_settings(config), transports=dict.fromkeys(BASE_URLS, transport), clock=lambda: TODAY)
    await gateway.start(run_worker=False, migrate=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as simulators:
        yield Deployment(gateway, simulators)
    await gateway.stop()


def today_string(when: datetime) -> str:
    """What a current CMP writes today: created today ("CQ…"), with its TCF v2.3 segments."""
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    segments = (tcf.disclosed_vendors(frozenset({2, 6})), tcf.publisher_tc())
    return tcf.encode(replace(tcf.decode(CMP_STRING_2024), created=day, last_updated=day, other_segments=segments))


@pytest.mark.parametrize("with_string", [True, False], ids=["with-tcf-string", "without-tcf-string"])
async def test_a_decision_made_today_reaches_every_provider(deployment: Deployment, with_string: bool) -> None:
    gateway = deployment.gateway
    when = TODAY - timedelta(minutes=1)
    body: dict[str, Any] = {
        "subject": {"id": "cust-today", "email": "today@example.com", "phone": "+14155550199"},
        "purposes": {"email_marketing": "granted", "sms_marketing": "granted", "behavioral_campaigns": "denied"},
        "occurred_at": when,
    }
    if with_string:
        body["tcf_string"] = today_string(when)
    recorded = await gateway.record(Decision.model_validate(body, strict=False))
    await gateway.worker.drain()
    found = await gateway.store.ledger.decision(recorded.id)
    assert found is not None
    statuses = {d.provider: (d.status, d.last_error) for d in found.deliveries}
    assert statuses == dict.fromkeys(BASE_URLS, (DeliveryStatus.succeeded, None))

    masivo = (await deployment.held("masivo"))["consents"]["cust-today"]
    sent = tcf.decode(masivo["consent_string"])
    assert sent.created.date() == when.date() and len(sent.other_segments) == 2
    intempt = (await deployment.held("intempt"))["records"]
    assert intempt and all(not record["timestamp_replaced"] for record in intempt)
    assert {record["body"]["timestamp"] for record in intempt} == {int(when.timestamp())}

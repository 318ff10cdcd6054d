"""Intempt adapter: per-category POSTs of what changed, timestamp unit, apiKey auth, errors, secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette

from adapters.base import Ack, Projection
from adapters.errors import LocalValidationError, PermanentError, TransientError
from adapters.intempt import IntemptAdapter, IntemptSettings
from adapters.simulators import intempt as intempt_simulator
from schemas.consent import PurposeRecord, PurposeState, SubjectState
from tests.adapters.canned import Canned, Classified, assert_classified, run
from tests.adapters.contract import AdapterContract, Scenario

API_KEY = "pk_0123.s3cr3t-0123456789"
BASE_URL = "https://intempt.test"
PATH = "/v1/acme/projects/shop/consents/data"
WHEN = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
WHEN_MS, WHEN_S = 1_714_564_800_250, 1_714_564_800
EXPIRES = datetime(2025, 5, 1, 12, tzinfo=UTC)
EXPIRES_MS = 1_746_100_800_000


def subject(purposes: dict[str, str], **fields: Any) -> SubjectState:
    records = {name: PurposeRecord(state=PurposeState(value), occurred_at=WHEN) for name, value in purposes.items()}
    return SubjectState(**{"subject_id": "cust-1", "occurred_at": WHEN, **fields}, purposes=records)


def make_adapter(**settings: Any) -> IntemptAdapter:
    defaults = {"api_key": SecretStr(API_KEY), "org": "acme", "project": "shop", "base_url": BASE_URL}
    return IntemptAdapter(IntemptSettings(**{**defaults, **settings}))


@pytest.fixture
def adapter() -> IntemptAdapter:
    return make_adapter()


FakeIntempt = Canned  # answers ``{}`` unless told otherwise


async def push(adapter: IntemptAdapter, state: SubjectState, fake: Canned, previous: Projection | None = None) -> Ack:
    return await run(adapter, adapter.push(state, previous or {}, {}), fake, BASE_URL)


def test_projection_per_category(adapter: IntemptAdapter) -> None:
    state = subject(
        {
            "email_marketing": "granted",
            "sms_marketing": "pending",
            "analytics": "denied",
            "link_tracking": "granted",
        }
    )
    assert adapter.project(state) == {
        "analytics": {"action": "reject", "validUntil": "unlimited"},
        "email": {"action": "accept", "validUntil": "unlimited"},
        "sms": {"action": "reject", "validUntil": "unlimited"},  # pending: double opt-in not confirmed
    }


@pytest.mark.parametrize(
    ("states", "action"),
    [
        (["granted", "granted"], "accept"),
        (["granted", "denied"], "reject"),
        (["pending", "granted"], "reject"),
    ],
)
def test_purposes_sharing_a_category_take_the_most_restrictive(states: list[str], action: str) -> None:
    adapter = make_adapter(purposes={"email_marketing": "marketing", "sms_marketing": "marketing"})
    state = subject(dict(zip(["email_marketing", "sms_marketing"], states, strict=True)))
    assert adapter.project(state) == {"marketing": {"action": action, "validUntil": "unlimited"}}


def test_nothing_mapped_projects_nothing(adapter: IntemptAdapter) -> None:
    assert adapter.project(subject({"coupon_campaigns": "granted"})) == {}


async def test_one_post_per_category(adapter: IntemptAdapter) -> None:
    fake = FakeIntempt()
    state = subject(
        {"email_marketing": "granted", "push_notifications": "denied"}, email="a@example.com", note="banner"
    )
    ack = await push(adapter, state, fake)
    assert [(r.method, r.url.path) for r in fake.requests] == [("POST", PATH)] * 2
    assert fake.bodies() == [
        {
            "action": "accept",
            "timestamp": WHEN_S,
            "validUntil": "unlimited",
            "source": "web",
            "category": "email",
            "userId": "cust-1",
            "email": "a@example.com",
            "message": "banner",
        },
        {
            "action": "reject",
            "timestamp": WHEN_S,
            "validUntil": "unlimited",
            "source": "web",
            "category": "push",
            "userId": "cust-1",
            "email": "a@example.com",
            "message": "banner",
        },
    ]
    assert ack == Ack(acknowledged=adapter.project(state))


async def test_optional_fields_are_omitted_when_unknown(adapter: IntemptAdapter) -> None:
    fake = FakeIntempt()
    await push(adapter, subject({"analytics": "granted"}, source="provider:wix"), fake)
    assert fake.bodies() == [
        {
            "action": "accept",
            "timestamp": WHEN_S,
            "validUntil": "unlimited",
            "source": "provider:wix",
            "category": "analytics",
            "userId": "cust-1",
        }
    ]


async def test_only_changed_categories_are_posted(adapter: IntemptAdapter) -> None:
    before = subject({"email_marketing": "granted", "sms_marketing": "granted", "analytics": "granted"})
    after = subject({"email_marketing": "granted", "sms_marketing": "denied", "analytics": "granted"})
    fake = FakeIntempt()
    ack = await push(adapter, after, fake, previous=adapter.project(before))
    assert [(body["category"], body["action"]) for body in fake.bodies()] == [("sms", "reject")]
    assert ack.acknowledged == adapter.project(after)


async def test_nothing_changed_sends_nothing(adapter: IntemptAdapter) -> None:
    state = subject({"email_marketing": "granted"})
    fake = FakeIntempt()
    assert await push(adapter, state, fake, previous=adapter.project(state)) == Ack(acknowledged=adapter.project(state))
    assert fake.requests == []


async def test_valid_until_comes_from_expires_at_and_a_new_expiry_is_posted(adapter: IntemptAdapter) -> None:
    unlimited = subject({"email_marketing": "granted"})
    expiring = subject({"email_marketing": "granted"}, expires_at=EXPIRES)
    fake = FakeIntempt()
    await push(adapter, expiring, fake, previous=adapter.project(unlimited))
    assert [body["validUntil"] for body in fake.bodies()] == [EXPIRES_MS]


@pytest.mark.parametrize(("unit", "timestamp"), [("ms", WHEN_MS), ("s", WHEN_S)])
async def test_timestamp_unit(unit: str, timestamp: int) -> None:
    fake = FakeIntempt()
    await push(make_adapter(timestamp_unit=unit), subject({"email_marketing": "granted"}, expires_at=EXPIRES), fake)
    assert fake.bodies()[0]["timestamp"] == timestamp
    assert fake.bodies()[0]["validUntil"] == EXPIRES_MS  # the docs: validUntil in ms, whatever the unit


async def test_api_key_travels_in_the_query_only(adapter: IntemptAdapter) -> None:
    fake = FakeIntempt()
    await push(adapter, subject({"email_marketing": "granted"}), fake)
    (request,) = fake.requests
    assert dict(request.url.params) == {"apiKey": API_KEY}
    assert API_KEY not in request.content.decode() and "authorization" not in request.headers
    assert all(API_KEY not in value for value in request.headers.values())


def test_rules_fail_before_any_request(adapter: IntemptAdapter) -> None:
    old = subject({"email_marketing": "granted", "analytics": "granted"}, occurred_at=datetime(2009, 6, 1, tzinfo=UTC))
    with pytest.raises(LocalValidationError, match="timestamp: Value error, must be epoch s between 2010 and 2040"):
        next(adapter.push(old, {}, {}))


@pytest.mark.parametrize(
    "expected",
    [
        (
            httpx.Response(400, json={"error": "Invalid request", "message": "Required field 'action' is missing"}),
            PermanentError,
            "intempt (HTTP 400): Invalid request: Required field 'action' is missing",
            None,
        ),
        (
            httpx.Response(429, headers={"Retry-After": "12"}, json={"error": "Too many", "message": "slow down"}),
            TransientError,
            "Too many: slow down",
            12.0,
        ),
        (httpx.Response(503, text="Service Unavailable"), TransientError, "Service Unavailable", None),
        (httpx.Response(408), TransientError, "Request Timeout", None),
    ],
)
async def test_error_classification(adapter: IntemptAdapter, expected: Classified) -> None:
    attempt = push(adapter, subject({"email_marketing": "granted"}), FakeIntempt(expected[0]))
    await assert_classified(attempt, expected, API_KEY)


def test_no_secret_in_reprs(adapter: IntemptAdapter) -> None:
    for text in (repr(adapter), repr(adapter.settings), str(adapter.settings), repr(adapter.auth())):
        assert API_KEY not in text and "s3cr3t" not in text
    assert adapter.secrets() == [API_KEY]


@pytest.mark.parametrize(
    "settings",
    [
        {"api_key": "no-dot-s3cr3t"},
        {"api_key": ".s3cr3t"},
        {"api_key": "pk_0123."},
        {"org": ""},
        {"timestamp_unit": "us"},
        {"apiKey": API_KEY},
    ],
)
def test_settings_reject(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        IntemptSettings.model_validate({"api_key": API_KEY, "org": "acme", "project": "shop", **settings})
    assert "s3cr3t" not in str(raised.value)


def test_default_settings() -> None:
    settings = IntemptSettings.model_validate({"api_key": API_KEY, "org": "acme", "project": "shop"})
    assert (settings.base_url, settings.timestamp_unit) == ("https://api.intempt.com", "s")
    assert settings.purposes == {
        "email_marketing": "email",
        "sms_marketing": "sms",
        "push_notifications": "push",
        "analytics": "analytics",
        "behavioral_campaigns": "personalization",
    }


# --- contract: the adapter against the Intempt simulator (an independent reading of docs and SDK) ---------

SIM_BASE = "https://intempt.sim"


async def sim_push(
    simulator: Starlette, adapter: IntemptAdapter, state: SubjectState, previous: Projection | None = None
) -> Ack:
    return await run(adapter, adapter.push(state, previous or {}, {}), simulator, SIM_BASE)


async def inspect(simulator: Starlette) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator), base_url=SIM_BASE) as client:
        return (await client.get("/_inspect")).json()


def sim_adapter(**settings: Any) -> IntemptAdapter:
    return make_adapter(base_url=SIM_BASE, **settings)


async def test_contract_categories_are_recorded() -> None:
    simulator, adapter = intempt_simulator.create_app(), sim_adapter()
    before = subject({"email_marketing": "granted", "push_notifications": "granted"}, expires_at=EXPIRES)
    after = subject({"email_marketing": "granted", "push_notifications": "denied"}, expires_at=EXPIRES)
    ack = await sim_push(simulator, adapter, before)
    await sim_push(simulator, adapter, after, previous=ack.acknowledged)
    seen = await inspect(simulator)
    assert seen["state"]["consents"] == {
        "acme": {
            "shop": {
                "cust-1": {
                    "email": {"action": "accept", "timestamp_ms": WHEN_S * 1000, "validUntil": EXPIRES_MS},
                    "push": {"action": "reject", "timestamp_ms": WHEN_S * 1000, "validUntil": EXPIRES_MS},
                }
            }
        }
    }
    # the second push re-sent only the category whose value changed
    assert [(r["path"], r["query"], r["status"]) for r in seen["requests"]] == [
        (PATH, {"apiKey": "<redacted>"}, 200)
    ] * 3
    assert not any(record["timestamp_replaced"] for record in seen["state"]["records"])
    assert API_KEY not in json.dumps(seen)


async def test_contract_documented_milliseconds_are_silently_replaced() -> None:
    """Pins the docs/SDK disagreement: the simulator follows the SDK, so the documented ms is replaced
    (the default is seconds), and the gateway says so at every start."""
    simulator = intempt_simulator.create_app()
    adapter = sim_adapter(timestamp_unit="ms")
    assert "every decision's own time is lost" in adapter.cautions()[0] and sim_adapter().cautions() == []
    await sim_push(simulator, adapter, subject({"analytics": "granted"}))
    (record,) = (await inspect(simulator))["state"]["records"]
    assert record["body"]["timestamp"] == WHEN_MS and record["timestamp_replaced"] is True


async def test_contract_unconfigured_category_is_permanent() -> None:
    simulator = intempt_simulator.create_app(categories=["email"])
    with pytest.raises(PermanentError, match="HTTP 400.*Invalid request: Field 'category'"):
        await sim_push(simulator, sim_adapter(), subject({"analytics": "granted"}))


# --- the shared contract, against the simulator and the shipped cassettes ---------------------


class TestIntemptContract(AdapterContract):
    provider = "intempt"
    purposes = ("email_marketing", "sms_marketing")
    settings = {"timestamp_unit": "s"}  # what the server reads (see IntemptSettings): the cassettes say it
    scenario_settings = {
        **AdapterContract.scenario_settings,
        "unconfigured_category_400": {"purposes": {"email_marketing": "email", "sms_marketing": "newsletter"}},
    }

    async def test_unconfigured_category_400(self, world: Scenario) -> None:
        """A purpose mapped to a category Intempt's org settings lack: 400, permanent."""
        error = await self.fails(world, PermanentError, 400)
        assert "Field 'category'" in str(error)

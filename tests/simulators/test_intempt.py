"""The Intempt simulator against the docs and the SDK: both auth forms, body rules, the timestamp trap."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from adapters.simulators.intempt import DEFAULT_CATEGORIES, create_app
from tests.simulators.helpers import ClientFactory, FakeClock

PATH = "/v1/acme/projects/web/consents/data"
API_KEY = "pk_live_42.s3cr3t-intempt-value"
KEY = {"apiKey": API_KEY}
NOW_S = 1_767_225_600  # FakeClock's default


def basic(user_password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}


def body(**changes: Any) -> dict[str, Any]:
    """A valid SDK-style body with `changes` applied (a value of ... removes the key)."""
    base: dict[str, Any] = {
        "action": "accept",
        "timestamp": NOW_S - 60,
        "validUntil": "unlimited",
        "source": "Python tracker",
        "userId": "user-1",
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not ...}


@pytest.fixture
def client(make_client: ClientFactory, clock: FakeClock) -> httpx.AsyncClient:
    return make_client(create_app(clock=clock))


async def state(client: httpx.AsyncClient) -> dict[str, Any]:
    inspected: dict[str, Any] = (await client.get("/_inspect")).json()["state"]
    return inspected


# --- auth --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({}, {}, 401),
        ({"apiKey": "no-dot-here"}, {}, 401),
        ({"apiKey": ".secret"}, {}, 401),
        ({"apiKey": "prefix."}, {}, 401),
        ({}, {"Authorization": "Basic %%%not-base64"}, 401),
        ({}, basic("prefix-without-colon"), 401),
        ({}, basic("prefix:"), 401),
        ({}, {"Authorization": f"Bearer {API_KEY}"}, 401),
        (KEY, {}, 200),  # the docs' form
        ({}, basic("pk_live_42:s3cr3t-intempt-value"), 200),  # the SDK's form
    ],
)
async def test_auth(client: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str], status: int) -> None:
    response = await client.post(PATH, params=params, headers=headers, json=body())
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"] == "Unauthorized"
        assert response.json()["message"]


# --- body rules --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sent", "field"),
    [
        (body(action=...), "action"),
        (body(action="maybe"), "action"),
        (body(action="ACCEPT"), "action"),
        (body(timestamp=...), "timestamp"),
        (body(timestamp="12a"), "timestamp"),
        (body(timestamp=True), "timestamp"),
        (body(timestamp=None), "timestamp"),
        (body(validUntil=...), "validUntil"),
        (body(validUntil="forever"), "validUntil"),
        (body(validUntil=None), "validUntil"),
        (body(source=...), "source"),
        (body(source=""), "source"),
        (body(source="   "), "source"),
        (body(source=7), "source"),
        (body(category="newsletter"), "category"),
        (body(category=None), "category"),
        (body(userId=42), "userId"),
        (body(email=["a@b.co"]), "email"),
        (body(message={}), "message"),
        (body(userId=..., profileId="p-1"), "sourceId"),
        (body(userId=..., profileId="p-1", sourceId=2), "sourceId"),  # the doc example's numeric sourceId
        (body(sourceId=0), "sourceId"),
        (body(timestamp=1_000_000_000), "timestamp"),  # 2001, read as seconds: before 2010
        (["action", "accept"], "body"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(client: httpx.AsyncClient, sent: Any, field: str) -> None:
    response = await client.post(PATH, params=KEY, json=sent)
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid request"
    assert field in response.json()["message"]


async def test_the_documented_error_message(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, params=KEY, json=body(action=...))
    assert response.json() == {
        "error": "Invalid request",
        "message": "Required field 'action' is missing or invalid",
    }


@pytest.mark.parametrize(
    "sent",
    [
        body(),
        body(timestamp=str(NOW_S)),
        body(timestamp=NOW_S + 0.5),
        body(validUntil=(NOW_S + 86_400) * 1000),
        body(validUntil=str((NOW_S + 86_400) * 1000)),
        body(category="analytics", email="a@b.co", message="banner"),
        body(userId=..., profileId="p-1", sourceId="1234567890123456789"),
        body(reason="cookie banner", method="click", deviceInfo={"os": "linux"}),  # what the SDK adds
        body(action="reject", userId=...),  # nobody identified: recorded, no per-user state
    ],
)
async def test_valid_bodies_are_accepted(client: httpx.AsyncClient, sent: dict[str, Any]) -> None:
    response = await client.post(PATH, params=KEY, json=sent)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert (await state(client))["records"][-1]["body"] == sent


# --- timestamp trap ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("timestamp", "stored_ms", "replaced"),
    [
        (NOW_S - 60, (NOW_S - 60) * 1000, False),  # seconds, as the SDK sends: kept
        ((NOW_S - 60) * 1000, NOW_S * 1000, True),  # milliseconds, as the docs say: silently "now"
        (1_262_304_000, 1_262_304_000_000, False),  # 2010-01-01: the earliest accepted
        (2_208_988_800, 2_208_988_800_000, False),  # 2040-01-01: the latest kept
        (2_208_988_801, NOW_S * 1000, True),
    ],
)
async def test_timestamp_is_read_as_seconds(
    client: httpx.AsyncClient, timestamp: int, stored_ms: int, replaced: bool
) -> None:
    assert (await client.post(PATH, params=KEY, json=body(timestamp=timestamp))).status_code == 200
    record = (await state(client))["records"][-1]
    assert (record["timestamp_ms"], record["timestamp_replaced"]) == (stored_ms, replaced)


# --- state -------------------------------------------------------------------------------------------
async def test_latest_action_per_category(client: httpx.AsyncClient) -> None:
    await client.post(PATH, params=KEY, json=body())  # no category: every configured category
    await client.post(PATH, params=KEY, json=body(action="reject", category="marketing"))
    await client.post(PATH, params=KEY, json=body(userId=..., profileId="p-9", sourceId="1", category="sms"))
    consents = (await state(client))["consents"]["acme"]["web"]
    assert {category: item["action"] for category, item in consents["user-1"].items()} == {
        category: "reject" if category == "marketing" else "accept" for category in DEFAULT_CATEGORIES
    }
    assert list(consents["p-9"]) == ["sms"]


async def test_categories_are_configurable(make_client: ClientFactory) -> None:
    client = make_client(create_app(categories=["cookies"]))
    assert (await client.post(PATH, params=KEY, json=body(category="analytics"))).status_code == 400
    assert (await client.post(PATH, params=KEY, json=body())).status_code == 200
    assert list((await state(client))["consents"]["acme"]["web"]["user-1"]) == ["cookies"]


async def test_inspect_never_shows_the_api_key(client: httpx.AsyncClient) -> None:
    await client.post(PATH, params={"APIKEY": "x", **KEY}, json=body(message=f"key {API_KEY}"))
    await client.post(PATH, headers=basic("pk_live_42:s3cr3t-intempt-value"), json=body())
    text = (await client.get("/_inspect")).text
    assert "s3cr3t-intempt-value" not in text
    assert basic("pk_live_42:s3cr3t-intempt-value")["Authorization"].split()[1] not in text

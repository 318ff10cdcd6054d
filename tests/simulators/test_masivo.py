"""The Masivo simulator against the seed docs: auth, token expiry, consent validation, replace semantics."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from adapters.simulators.masivo import PURPOSES, TOKEN_TTL_S, create_app
from tests.simulators.helpers import ClientFactory, FakeClock

API_KEY = "mk_test_0123456789abcdef"
CONSENT_STRING = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"  # the doc's example


def consent(**changes: Any) -> dict[str, Any]:
    """A valid consent object with `changes` applied (a value of ... removes the key)."""
    base: dict[str, Any] = {
        "consent_string": CONSENT_STRING,
        "version": "2.0",
        "consent_timestamp": "2026-01-01T10:00:00Z",
        "customer_id": "cust-1",
        "purposes": dict.fromkeys(PURPOSES, True),
        "vendors": {"vendor_123": True, "vendor_456": False},
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not ...}


@pytest.fixture
def client(make_client: ClientFactory, clock: FakeClock) -> httpx.AsyncClient:
    return make_client(create_app(clock=clock))


async def authorize(client: httpx.AsyncClient) -> str:
    response = await client.get("/auth/authorize", headers={"x-api-key": API_KEY})
    assert response.status_code == 200
    token: str = response.json()["data"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# --- auth --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "   "}])
async def test_authorize_needs_an_api_key(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/auth/authorize", headers=headers)
    assert response.status_code == 401
    assert set(response.json()) == {"error", "details"}


async def test_authorize_issues_a_one_hour_jwt(client: httpx.AsyncClient, clock: FakeClock) -> None:
    token = await authorize(client)
    assert token.count(".") == 2
    assert jwt_part(token, 0)["alg"] == "HS256"
    assert jwt_part(token, 1)["exp"] == int(clock.now) + TOKEN_TTL_S


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer not-a-token", "Basic dXNlcjpwYXNz", API_KEY],
    ids=["missing", "empty", "no-credentials", "unknown-token", "basic", "raw-api-key"],
)
async def test_api_routes_need_an_issued_bearer_token(client: httpx.AsyncClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/customers/cust-1/consent", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"


async def test_token_expires_after_one_hour_by_the_simulator_clock(client: httpx.AsyncClient, clock: FakeClock) -> None:
    token = await authorize(client)
    clock.now += TOKEN_TTL_S - 1
    assert (await client.get("/customers/c/consent", headers=bearer(token))).status_code == 200
    clock.now += 1
    expired = await client.get("/customers/c/consent", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.json() == {"error": "Unauthorized", "details": "Token expired"}
    assert (await client.get("/customers/c/consent", headers=bearer(await authorize(client)))).status_code == 200


async def test_expire_tokens_control_forces_one_refresh(client: httpx.AsyncClient) -> None:
    old = await authorize(client)
    assert (await client.post("/_faults", json={"expire_tokens": True})).status_code == 200
    assert (await client.get("/customers/c/consent", headers=bearer(old))).status_code == 401
    fresh = await authorize(client)
    assert (await client.get("/customers/c/consent", headers=bearer(fresh))).status_code == 200
    tokens = (await client.get("/_inspect")).json()["state"]["tokens"]
    assert tokens == {"issued": 2, "valid": 1}


# --- consent validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "consent is required"),
        ({"consent": "yes"}, "consent is required"),
        ({"consent": consent(consent_string=...)}, "consent_string is required"),
        ({"consent": consent(consent_string=123)}, "consent_string is required"),
        ({"consent": consent(consent_string="COshort")}, "20 to 500"),
        ({"consent": consent(consent_string="CO" + "A" * 499)}, "20 to 500"),
        ({"consent": consent(consent_string="B" + CONSENT_STRING[1:])}, "must match"),  # not TCF v2
        ({"consent": consent(consent_string=CONSENT_STRING + ".")}, "must match"),  # an empty segment
        ({"consent": consent(consent_string=CONSENT_STRING + "!")}, "must match"),
        ({"consent": consent(consent_string=CONSENT_STRING + "\n")}, "must match"),
        ({"consent": consent(version=2.0)}, "version must be a string"),
        ({"consent": consent(customer_id=7)}, "customer_id must be a string"),
        ({"consent": consent(consent_timestamp="yesterday")}, "consent_timestamp"),
        ({"consent": consent(consent_timestamp="2026-01-01")}, "consent_timestamp"),
        ({"consent": consent(consent_timestamp="2026-01-01T10:00:00")}, "consent_timestamp"),
        ({"consent": consent(consent_timestamp=1767225600)}, "consent_timestamp"),
        ({"consent": consent(purposes=["email_marketing"])}, "purposes must be an object"),
        ({"consent": consent(purposes={"sms_marketing": True})}, "unknown purposes: sms_marketing"),
        ({"consent": consent(purposes={"email_marketing": 1})}, "purposes.email_marketing must be a boolean"),
        ({"consent": consent(vendors={"meta": "yes"})}, "vendors.meta must be a boolean"),
        ({"consent": consent(vendors=[])}, "vendors must be an object"),
        ({"consent": consent(purpose={})}, "unknown fields: purpose"),
    ],
)
async def test_patch_rejects_invalid_consent(client: httpx.AsyncClient, body: Any, fragment: str) -> None:
    response = await client.patch("/customers/cust-1/consent", json=body, headers=bearer(await authorize(client)))
    assert response.status_code == 422
    assert response.json()["error"] == "Invalid consent data"
    assert fragment in response.json()["details"]


@pytest.mark.parametrize(
    "value",
    [
        consent(),
        {"consent_string": "CO" + "A" * 18},
        {"consent_string": "CO" + "a_-9" * 124 + "zz"},
        consent(consent_timestamp="2026-01-01T10:00:00.123+02:00"),
        consent(purposes={"email_marketing": False}, vendors={}),
    ],
    ids=["full", "min-length", "max-length", "offset-timestamp", "partial-purposes"],
)
async def test_patch_accepts_valid_consent(client: httpx.AsyncClient, value: dict[str, Any]) -> None:
    headers = bearer(await authorize(client))
    response = await client.patch("/customers/cust-1/consent", json={"consent": value}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"data": {"consent": value}}
    assert (await client.get("/customers/cust-1/consent", headers=headers)).json() == {"data": {"consent": value}}


async def test_patch_replaces_purposes_and_omitted_purposes_are_not_allowed(
    client: httpx.AsyncClient,
) -> None:
    headers = bearer(await authorize(client))
    await client.patch("/customers/c/consent", json={"consent": consent()}, headers=headers)
    only_email = consent(purposes={"email_marketing": True})
    await client.patch("/customers/c/consent", json={"consent": only_email}, headers=headers)
    stored = (await client.get("/customers/c/consent", headers=headers)).json()["data"]["consent"]
    assert stored["purposes"] == {"email_marketing": True}
    effective = (await client.get("/_inspect")).json()["state"]["effective_purposes"]["c"]
    assert effective == {name: name == "email_marketing" for name in PURPOSES}


async def test_unrecorded_consent_reads_as_all_purposes_true(client: httpx.AsyncClient) -> None:
    headers = bearer(await authorize(client))
    default = (await client.get("/customers/new/consent", headers=headers)).json()["data"]["consent"]
    assert default["purposes"] == dict.fromkeys(PURPOSES, True)
    customer = (await client.get("/customers/new", headers=headers)).json()
    assert customer == {"data": {"customer": {"id": "new", "consent": None}, "wallet": {}}}


async def test_customer_carries_the_recorded_consent(client: httpx.AsyncClient) -> None:
    headers = bearer(await authorize(client))
    await client.patch("/customers/c/consent", json={"consent": consent()}, headers=headers)
    customer = (await client.get("/customers/c", headers=headers)).json()["data"]["customer"]
    assert customer == {"id": "c", "consent": consent()}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/customers/gone/consent", {"consent": consent()}),
        ("PATCH", "/customers/gone/consent", {}),  # not found is reported before invalid data
        ("GET", "/customers/gone/consent", None),
        ("GET", "/customers/gone", None),
    ],
)
async def test_missing_customers_answer_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    answer = await client.post("/_faults", json={"missing_customers": ["gone"]})
    assert answer.json()["missing_customers"] == ["gone"]
    response = await client.request(method, path, json=body, headers=bearer(await authorize(client)))
    assert response.status_code == 404
    assert response.json()["error"] == "Customer not found"


@pytest.mark.parametrize(
    "controls", [{"missing_customers": "gone"}, {"expire_tokens": "yes"}, {"unknown": 1}, {"error_rate": 2}]
)
async def test_invalid_controls_are_rejected_and_change_nothing(
    client: httpx.AsyncClient, controls: dict[str, Any]
) -> None:
    response = await client.post("/_faults", json={"missing_customers": ["x"], **controls})
    assert response.status_code == 400
    assert (await client.get("/_inspect")).json()["state"]["missing_customers"] == []


async def test_inspect_never_shows_the_api_key_or_the_token(client: httpx.AsyncClient) -> None:
    token = await authorize(client)
    await client.patch(
        f"/customers/c/consent?note={token}",
        json={"consent": consent(customer_id=token)},
        headers=bearer(token),
    )
    await client.get("/customers/c", headers={"Authorization": f"Bearer {token}", "cookie": f"s={API_KEY}"})
    text = (await client.get("/_inspect")).text
    assert API_KEY not in text
    assert token not in text
    assert token.split(".")[2] not in text
    assert "<redacted>" in text

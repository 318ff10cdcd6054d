"""Shared simulator machinery: fault injection, control routes, the request log, redaction, mounting."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from adapters.registry import provider, providers, simulators_app
from adapters.simulators.common import REDACTED, Faults, basic_credentials
from adapters.simulators.intempt import DEFAULT_CATEGORIES
from adapters.simulators.wix import BASE_PATH as WIX
from tests.simulators.helpers import ClientFactory

# One API request per simulator that succeeds when no fault is injected.
CALLS: dict[str, dict[str, Any]] = {
    "masivo": {"method": "GET", "url": "/auth/authorize", "headers": {"x-api-key": "mk-key-123456"}},
    "wix": {
        "method": "POST",
        "url": f"{WIX}/query",
        "headers": {"Authorization": "wix-key-123456", "wix-site-id": "s"},
        "json": {"query": {}},
    },
    "intempt": {
        "method": "POST",
        "url": "/v1/o/projects/p/consents/data?apiKey=pre.fix-secret",
        "json": {"action": "accept", "timestamp": 1_767_225_600, "validUntil": "unlimited", "source": "web"},
    },
}


def make(name: str, make_client: ClientFactory, **faults: Any) -> httpx.AsyncClient:
    return make_client(provider(name).simulator_app(Faults(**faults)))


# --- Faults ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": 1.5},
        {"timeout_rate": -0.1},
        {"latency_ms": -1},
        {"status": 200},
        {"retry_after_s": -1},
        {"x": 1},
    ],
)
def test_faults_reject_out_of_range_settings(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Faults(**fields)


@pytest.mark.parametrize("name", list(providers()))
async def test_no_faults_by_default(make_client: ClientFactory, name: str) -> None:
    assert (await make(name, make_client).request(**CALLS[name])).status_code == 200


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("masivo", 503, {"error": "Service Unavailable", "details": "Simulated fault"}),
        ("masivo", 429, {"error": "Too Many Requests", "details": "Simulated fault"}),
        ("intempt", 503, {"error": "Service Unavailable", "message": "Simulated fault"}),
        ("wix", 503, None),  # Wix system errors have an empty body
        (
            "wix",
            429,
            {
                "message": "Simulated fault",
                "details": {"applicationError": {"code": "RESOURCE_EXHAUSTED", "description": "Simulated fault"}},
            },
        ),
    ],
)
async def test_injected_errors_use_the_status_retry_after_and_provider_shape(
    make_client: ClientFactory, name: str, status: int, body: dict[str, Any] | None
) -> None:
    client = make(name, make_client, error_rate=1, status=status, retry_after_s=2)
    response = await client.request(**CALLS[name])
    assert response.status_code == status
    assert response.headers["retry-after"] == "2"
    assert (response.json() if response.content else None) == body


async def test_injected_errors_spare_the_control_routes(make_client: ClientFactory) -> None:
    client = make("wix", make_client, error_rate=1, timeout_rate=1, latency_ms=10_000)
    assert (await client.get("/_inspect")).status_code == 200
    assert (
        await client.post("/_faults", json={"error_rate": 0, "timeout_rate": 0, "latency_ms": 0})
    ).status_code == 200
    assert (await client.request(**CALLS["wix"])).status_code == 200


async def test_latency_is_added(make_client: ClientFactory) -> None:
    client = make("intempt", make_client, latency_ms=30)
    started = time.perf_counter()
    assert (await client.request(**CALLS["intempt"])).status_code == 200
    assert time.perf_counter() - started >= 0.03


async def test_timeout_hangs_then_answers_504(make_client: ClientFactory) -> None:
    client = make("masivo", make_client, timeout_rate=1, hang_s=0.01)
    response = await client.request(**CALLS["masivo"])
    assert (response.status_code, response.json()["error"]) == (504, "Gateway Timeout")


async def test_a_hanging_request_outlasts_a_client_timeout_and_stays_unanswered_in_the_log(
    make_client: ClientFactory,
) -> None:
    app = provider("intempt").simulator_app(Faults(timeout_rate=1, hang_s=5))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(make_client(app).request(**CALLS["intempt"]), timeout=0.05)
    assert [entry["status"] for entry in (await make_client(app).get("/_inspect")).json()["requests"]] == [None]


async def test_a_seed_makes_faults_reproducible(make_client: ClientFactory) -> None:
    async def statuses() -> list[int]:
        client = make("masivo", make_client, error_rate=0.5, seed=7)
        return [(await client.request(**CALLS["masivo"])).status_code for _ in range(20)]

    first = await statuses()
    assert first == await statuses()
    assert {200, 503} == set(first)


# --- control routes ----------------------------------------------------------------------------------
async def test_post_faults_merges_and_answers_the_settings(make_client: ClientFactory) -> None:
    client = make("intempt", make_client, latency_ms=1)
    answer = await client.post("/_faults", json={"error_rate": 1, "status": 429, "retry_after_s": 0.5})
    assert answer.json() == Faults(latency_ms=1, error_rate=1, status=429, retry_after_s=0.5).model_dump()
    response = await client.request(**CALLS["intempt"])
    assert (response.status_code, response.headers["retry-after"]) == (429, "0.5")


@pytest.mark.parametrize("sent", [{"error_rate": 2}, {"status": "teapot"}, {"unknown": 1}, [1], "x"])
async def test_post_faults_rejects_invalid_settings_and_changes_nothing(make_client: ClientFactory, sent: Any) -> None:
    client = make("wix", make_client)
    assert (await client.post("/_faults", json=sent)).status_code == 400
    unchanged = Faults().model_dump() | {"refused_addresses": []}  # Wix's own control, echoed
    assert (await client.post("/_faults", json={})).json() == unchanged


async def test_reset_restores_the_app_as_created(make_client: ClientFactory) -> None:
    client = make("intempt", make_client, latency_ms=1)
    await client.request(**CALLS["intempt"])
    await client.post("/_faults", json={"error_rate": 1})
    assert (await client.post("/_reset")).json() == {}
    assert (await client.get("/_inspect")).json() == {
        "state": {"categories": list(DEFAULT_CATEGORIES), "consents": {}, "records": []},
        "requests": [],
    }
    assert (await client.post("/_faults", json={})).json() == Faults(latency_ms=1).model_dump()


# --- request log -------------------------------------------------------------------------------------
async def test_the_log_records_each_api_request_with_secrets_redacted(make_client: ClientFactory) -> None:
    client = make("intempt", make_client)
    call = CALLS["intempt"]
    await client.post(
        call["url"] + "&ApiKey=other-secret-999&page=2",
        json=call["json"],
        headers={
            "Authorization": "Basic abc",
            "X-Api-Key": "k-123456789",
            "Cookie": "sid=c-123456789",
            "X-Trace": "t1",
        },
    )
    (entry,) = (await client.get("/_inspect")).json()["requests"]
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/o/projects/p/consents/data"
    assert entry["query"] == {"apiKey": REDACTED, "ApiKey": REDACTED, "page": "2"}
    assert entry["body"] == call["json"]
    assert entry["status"] == 200
    headers = entry["headers"]
    assert (headers["authorization"], headers["x-api-key"], headers["cookie"]) == (REDACTED,) * 3
    assert headers["x-trace"] == "t1"


async def test_a_sent_secret_is_redacted_wherever_it_reappears(make_client: ClientFactory) -> None:
    client = make("intempt", make_client)
    call = CALLS["intempt"]
    await client.post(
        call["url"], json={**call["json"], "message": "my key is pre.fix-secret", "userId": "pre.fix-secret"}
    )
    text = (await client.get("/_inspect")).text
    assert "fix-secret" not in text
    assert "my key is <redacted>" in text


async def test_a_short_secret_is_redacted_only_where_it_is_a_whole_value(make_client: ClientFactory) -> None:
    client = make("intempt", make_client)
    call = CALLS["intempt"]
    await client.post(
        "/v1/o/projects/p/consents/data?apiKey=a.b", json={**call["json"], "userId": "a.b", "message": "a.b."}
    )
    (record,) = (await client.get("/_inspect")).json()["state"]["records"]
    assert (record["user"], record["body"]["message"]) == (REDACTED, "a.b.")


async def test_malformed_json_and_unknown_paths_answer_in_the_provider_shape(
    make_client: ClientFactory,
) -> None:
    client = make("masivo", make_client)
    token = (await client.request(**CALLS["masivo"])).json()["data"]
    malformed = await client.patch(
        "/customers/c/consent", content=b"{nope", headers={"Authorization": f"Bearer {token}"}
    )
    assert (malformed.status_code, set(malformed.json())) == (400, {"error", "details"})
    missing = await client.get("/no/such/path")
    assert (missing.status_code, set(missing.json())) == (404, {"error", "details"})


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (base64.b64encode(b"user:pass").decode(), ("user", "pass")),
        (base64.b64encode(b"user:pa:ss").decode(), ("user", "pa:ss")),
        (base64.b64encode(b"user").decode(), None),
        (base64.b64encode(b":pass").decode(), None),
        (base64.b64encode(b"\xff\xfe:x").decode(), None),
        ("not base64!", None),
    ],
)
def test_basic_credentials(credentials: str, expected: tuple[str, str] | None) -> None:
    assert basic_credentials(credentials) == expected


# --- mounting ----------------------------------------------------------------------------------------
async def test_create_all_mounts_each_simulator(make_client: ClientFactory) -> None:
    client = make_client(simulators_app(Faults(latency_ms=1)))
    for name, call in CALLS.items():
        response = await client.request(**{**call, "url": f"/{name}{call['url']}"})
        assert response.status_code == 200, (name, response.text)
        inspected = (await client.get(f"/{name}/_inspect")).json()
        assert [entry["path"] for entry in inspected["requests"]] == [f"/{name}{call['url'].split('?')[0]}"]

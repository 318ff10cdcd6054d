"""Scrubbing, normalization, recording and replay, on small hand-made exchanges."""

from __future__ import annotations

import httpx
import pytest

from gateway.testing import providers
from gateway.testing.cassette import Cassette, Interaction, RecordedRequest, RecordedResponse
from gateway.testing.normalize import Normalizer
from gateway.testing.recorder import Recorder, SecretLeak
from gateway.testing.replay import CassetteMiss, Replayer, UnusedInteractions
from gateway.testing.scrub import Scrubber, find_leaks

BASE = "https://provider.test/api/v1"
KEY = "live-key-0123456789"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def test_scrubber_replaces_every_kind_of_credential() -> None:
    scrubber = Scrubber({"api_key": KEY})
    request = scrubber.request(
        RecordedRequest(
            method="POST",
            path=f"/keys/{KEY}",
            query=[("apiKey", KEY), ("token", "opaque-1234"), ("page", "2")],
            headers={"authorization": f"Bearer {JWT}", "x-api-key": "unknown-but-secret", "content-type": "x"},
            body={"note": f"key={KEY}", "client_secret": "s3cr3t-value", "items": [JWT]},
        )
    )
    assert request.path == "/keys/<redacted:api_key>"
    assert request.query == [("apiKey", "<redacted:api_key>"), ("token", "<redacted:token>"), ("page", "2")]
    assert request.headers == {
        "authorization": "Bearer <redacted:jwt>",
        "x-api-key": "<redacted:x-api-key>",
        "content-type": "x",
    }
    assert request.body == {
        "note": "key=<redacted:api_key>",
        "client_secret": "<redacted:client_secret>",
        "items": ["<redacted:jwt>"],
    }
    assert find_leaks(request.model_dump_json(), {"api_key": KEY}) == []


def test_find_leaks() -> None:
    assert find_leaks(f"Bearer abcdefghijkl {JWT} {KEY}", {"api_key": KEY}) == [
        "the value of api_key",
        f"a JWT ({JWT[:12]}…)",
        "a bearer credential (Bearer abcde…)",
    ]


def _exchange(path: str, sent: object, answered: object) -> Interaction:
    return Interaction(
        request=RecordedRequest(method="POST", path=path, body=sent),
        response=RecordedResponse(status=200, body=answered),
    )


def test_normalizer_replaces_only_what_the_provider_made_up() -> None:
    normalizer = Normalizer()
    made_up = "9b2f1c3e-8a4d-4f6b-9c1d-2e3f4a5b6c7d"
    sent_time, their_time = "2026-11-23T12:00:00Z", "2026-11-24T09:15:02.123Z"
    first = normalizer.interaction(
        _exchange("/things", {"at": sent_time}, {"id": made_up, "at": sent_time, "created": their_time})
    )
    second = normalizer.interaction(_exchange(f"/things/{made_up}", {"id": made_up}, {"updated": their_time}))
    assert first.response is not None and first.response.body == {
        "id": "00000000-0000-4000-8000-000000000001",
        "at": sent_time,
        "created": "2000-01-01T00:00:01.000Z",
    }
    assert second.request.path == "/things/00000000-0000-4000-8000-000000000001"
    assert second.response is not None and second.response.body == {"updated": "2000-01-01T00:00:01.000Z"}


async def _recorded(handler: httpx.MockTransport, *calls: tuple[str, str, object]) -> Cassette:
    recorder = Recorder(handler, provider="acme", base_url=BASE, secrets={"api_key": KEY}, volatile=["at"])
    async with httpx.AsyncClient(base_url=BASE, transport=recorder, headers={"x-api-key": KEY}) as client:
        for method, path, body in calls:
            try:
                await client.request(method, path, json=body)
            except httpx.TimeoutException:
                pass
    return recorder.cassette()


def _flaky() -> httpx.MockTransport:
    answers = iter([httpx.Response(503, headers={"Retry-After": "7"}), httpx.Response(200, json={"ok": True})])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/slow"):
            raise httpx.ReadTimeout("slow", request=request)
        return next(answers)

    return httpx.MockTransport(handle)


async def test_a_503_then_a_200_replay_in_turn_and_a_timeout_replays_as_one() -> None:
    cassette = await _recorded(
        _flaky(), ("POST", "/push", {"at": 1, "v": 1}), ("POST", "/push", {"at": 1, "v": 1}), ("GET", "/slow", None)
    )
    assert [i.response.status if i.response else i.error for i in cassette.interactions] == [503, 200, "timeout"]
    assert cassette.interactions[0].response and cassette.interactions[0].response.headers == {"retry-after": "7"}
    replayer = Replayer(Cassette.loads(cassette.dumps()), "https://elsewhere.test/api/v1")
    async with httpx.AsyncClient(base_url="https://elsewhere.test/api/v1", transport=replayer.transport) as client:
        assert (await client.post("/push", json={"at": 99, "v": 1})).status_code == 503  # "at" is volatile
        assert (await client.post("/push", json={"v": 1, "at": 5})).json() == {"ok": True}
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow")
    replayer.verify()


async def test_a_miss_shows_a_diff_and_fails_verify_even_when_swallowed() -> None:
    cassette = await _recorded(_flaky(), ("POST", "/push", {"v": 1}))
    replayer = Replayer(cassette, BASE)
    with httpx.Client(base_url=BASE, transport=replayer.sync_transport) as client:
        with pytest.raises(CassetteMiss) as missed:
            client.post("/push", json={"v": 2})
    assert '-    "v": 1\n+    "v": 2' in str(missed.value)
    with pytest.raises(CassetteMiss):
        replayer.verify()


async def test_unused_interactions_fail_unless_optional() -> None:
    cassette = await _recorded(_flaky(), ("POST", "/push", {"v": 1}))
    with pytest.raises(UnusedInteractions, match="POST /push"):
        Replayer(cassette, BASE).verify()
    Replayer(cassette, BASE, optional=True).verify()


async def test_a_leak_the_scrubber_misses_is_refused() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"session": "Bearer abcdefghijklmnop"})

    with pytest.raises(SecretLeak, match="bearer credential"):
        await _recorded(httpx.MockTransport(handle), ("GET", "/me", None))


def test_settings_come_from_each_adapters_own_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert providers.stand_in_settings("wix") == {
        "base_url": "https://wix.invalid",
        "api_key": "wix-api_key.not-a-real-secret",
        "site_id": "wix-site_id",
    }
    assert providers.live_settings("intempt") is None
    monkeypatch.setenv("CONSENT_GATEWAY_RECORD_INTEMPT__ORG", "acme")
    assert providers.live_settings("intempt") is None  # no key: record against the simulator
    monkeypatch.setenv("CONSENT_GATEWAY_RECORD_INTEMPT__API_KEY", "pfx.secret")
    assert providers.live_settings("intempt") == {"org": "acme", "api_key": "pfx.secret"}

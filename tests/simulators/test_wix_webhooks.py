"""The Wix simulator's signed webhooks, read the way the gateway reads them (schemas.wix): one event per
change, RS256 with the shipped test key, duplicates, reordering and redelivery of failed sends."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from typer.testing import CliRunner

from adapters.simulators.wix import BASE_PATH, BULK_UPSERT, create_app
from adapters.simulators.wix_webhooks import (
    EVENT_CREATED,
    EVENT_DELETED,
    EVENT_UPDATED,
    TEST_PRIVATE_KEY,
    TEST_PUBLIC_KEY,
    Sender,
    Webhooks,
)
from gateway.cli import app as cli
from gateway.cli import serve as serve_command
from schemas.wix import CONSENT_ENTITY, EVENT_SLUGS, ConsentEvent, StoredConsent, WebhookData, received
from tests.simulators.helpers import ClientFactory, FakeClock
from tests.simulators.test_wix import AUTH, REVOKE, email_consent

URL = "http://gateway/v1/events/wix"


class Receiver:
    """A stand-in for the gateway's events endpoint: keeps every body, answers ``statuses`` in turn, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.statuses = list(statuses)
        self.app = Starlette(routes=[Route("/v1/events/wix", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.requests.append(request)
        self.bodies.append(await request.body())
        return Response(status_code=self.statuses.pop(0) if self.statuses else 200)


@dataclass
class Sleeps:
    """The sender's injected sleep: records each wait and moves the clock on instead of waiting."""

    clock: FakeClock
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds
        await asyncio.sleep(0)


@dataclass
class Event:
    claims: dict[str, Any]
    data: WebhookData
    event: ConsentEvent

    @property
    def consent(self) -> StoredConsent:
        entity_json = self.event.entity_json()
        assert entity_json is not None
        return received(StoredConsent, json.loads(entity_json))


def read(body: bytes) -> Event:
    """Verify the signature (the time claims are checked against the injected clock by the tests) and parse."""
    claims = jwt.decode(body, TEST_PUBLIC_KEY, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    data = received(WebhookData, json.loads(claims["data"]))
    event = received(ConsentEvent, json.loads(data.data))
    assert event.entityFqdn == CONSENT_ENTITY
    assert event.slug in EVENT_SLUGS
    return Event(claims, data, event)


def slugs(receiver: Receiver) -> list[str]:
    return [read(body).event.slug for body in receiver.bodies]


@dataclass
class Sim:
    client: httpx.AsyncClient
    sender: Sender
    receiver: Receiver

    async def events(self) -> list[Event]:
        await self.sender.idle()
        return [read(body) for body in self.receiver.bodies]

    async def upsert(self, consent: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": consent})
        assert response.status_code == 200, response.text
        entity: dict[str, Any] = response.json()["marketingConsent"]
        return entity


def simulator(make_client: ClientFactory, clock: FakeClock, receiver: Receiver | None = None, **settings: Any) -> Sim:
    receiver = receiver or Receiver()
    settings.setdefault("sleep", Sleeps(clock))
    webhooks = Webhooks(url=URL, transport=httpx.ASGITransport(app=receiver.app), **settings)
    app = create_app(clock=clock, webhooks=webhooks)
    return Sim(make_client(app, headers=AUTH), app.state.webhooks, receiver)


@pytest.fixture
def sim(make_client: ClientFactory, clock: FakeClock) -> Sim:
    return simulator(make_client, clock)


# --- the wire ------------------------------------------------------------------------------------------
async def test_a_revoke_sends_one_signed_updated_event(make_client: ClientFactory) -> None:
    clock = FakeClock(float(int(time.time()) - 120))  # on the wall clock: a plain jwt.decode accepts iat, exp
    sim = simulator(make_client, clock)
    consent_id = (await sim.upsert(email_consent()))["id"]
    await sim.sender.idle()
    sim.receiver.bodies.clear()
    clock.now += 60

    response = await sim.client.post(
        f"{BASE_PATH}/remove",
        json={"details": {"type": "EMAIL", "email": "ana@example.com"}, "lastRevokeActivity": REVOKE},
    )
    assert response.status_code == 200, response.text
    await sim.sender.idle()

    [body] = sim.receiver.bodies
    assert sim.receiver.requests[0].headers["content-type"] == "text/plain"
    claims = jwt.decode(body, TEST_PUBLIC_KEY, algorithms=["RS256"])
    assert set(claims) == {"data", "iat", "exp"}
    data = received(WebhookData, json.loads(claims["data"]))
    assert (data.eventType, data.instanceId) == (EVENT_UPDATED, "demo-site")
    event = received(ConsentEvent, json.loads(data.data))
    assert (event.entityFqdn, event.slug, event.entityId) == (CONSENT_ENTITY, "updated", consent_id)
    assert event.eventTime.timestamp() == clock.now
    assert event.triggeredByAnonymizeRequest is False
    entity_json = event.entity_json()
    assert entity_json is not None
    consent = received(StoredConsent, json.loads(entity_json))
    assert consent.id == consent_id
    assert consent.state is not None and consent.state.value == "REVOKED"
    assert consent.revision == "2"


async def test_exp_is_iat_plus_ttl_on_the_injected_clock(make_client: ClientFactory, clock: FakeClock) -> None:
    sim = simulator(make_client, clock, ttl_s=60)
    clock.now += 0.75
    await sim.upsert(email_consent())
    [event] = await sim.events()
    assert event.claims["iat"] == int(clock.now)
    assert event.claims["exp"] == event.claims["iat"] + 60


async def test_an_event_signed_with_another_key_does_not_verify(make_client: ClientFactory, clock: FakeClock) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    sim = simulator(make_client, clock, private_key=pem, instance_id="site-1")
    await sim.upsert(email_consent())
    await sim.sender.idle()
    [body] = sim.receiver.bodies
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body, TEST_PUBLIC_KEY, algorithms=["RS256"], options={"verify_exp": False})


# --- which changes announce what --------------------------------------------------------------------------
async def test_create_and_upsert_announce_created_then_updated_and_nothing_when_unchanged(sim: Sim) -> None:
    response = await sim.client.post(BASE_PATH, json={"marketingConsent": email_consent(email="bo@example.com")})
    assert response.status_code == 200, response.text
    first = await sim.upsert(email_consent())
    await sim.upsert(email_consent())  # the same again: no change, no event
    await sim.upsert(email_consent(state="NEVER_CONFIRMED", lastConfirmationActivity=...))

    events = await sim.events()
    assert [(item.data.eventType, item.event.slug) for item in events] == [
        (EVENT_CREATED, "created"),
        (EVENT_CREATED, "created"),
        (EVENT_UPDATED, "updated"),
    ]
    assert events[1].event.entityId == events[2].event.entityId == first["id"]
    assert events[1].event.createdEvent is not None
    assert [events[1].consent.revision, events[2].consent.revision] == ["1", "2"]
    assert len({item.event.id for item in events}) == 3  # a new id per event


async def test_each_successful_bulk_item_announces_its_change(sim: Sim) -> None:
    existing = await sim.upsert(email_consent())
    items = [
        email_consent(email="new@example.com"),
        email_consent(state="NEVER_CONFIRMED", lastConfirmationActivity=...),
        email_consent(state="REVOKED", email="bad@example.com"),  # REVOKED needs a revoke activity: fails alone
        email_consent(email="new@example.com"),  # unchanged by now
    ]
    response = await sim.client.post(BULK_UPSERT, json={"info": items})
    assert response.json()["metadata"] == {"totalSuccess": 3, "totalFailure": 1}

    events = await sim.events()
    assert [item.event.slug for item in events] == ["created", "created", "updated"]
    assert events[2].event.entityId == existing["id"]


async def test_patch_announces_a_change_and_nothing_else(sim: Sim) -> None:
    entity = await sim.upsert(email_consent())
    path = f"{BASE_PATH}/{entity['id']}"
    revoke = {**email_consent(state="REVOKED"), "lastRevokeActivity": REVOKE}
    assert (await sim.client.patch(path, json={"marketingConsent": revoke})).status_code == 200
    unknown = email_consent(state="UNKNOWN_STATE", lastConfirmationActivity=...)  # ignored for EMAIL: no change
    assert (await sim.client.patch(path, json={"marketingConsent": unknown})).status_code == 200

    events = await sim.events()
    assert [item.event.slug for item in events] == ["created", "updated"]
    assert events[1].consent.state is not None and events[1].consent.state.value == "REVOKED"


async def test_delete_announces_deleted_with_the_entity(sim: Sim) -> None:
    entity = await sim.upsert(email_consent())
    assert (await sim.client.delete(f"{BASE_PATH}/{entity['id']}")).status_code == 200

    events = await sim.events()
    deleted = events[-1]
    assert (deleted.data.eventType, deleted.event.slug, deleted.event.entityId) == (
        EVENT_DELETED,
        "deleted",
        entity["id"],
    )
    assert deleted.event.deletedEvent is not None and deleted.event.deletedEvent.movedToTrash is False
    assert deleted.consent.id == entity["id"]
    assert deleted.event.triggeredByAnonymizeRequest is False


async def test_anonymize_deletes_the_consent_and_says_so(sim: Sim) -> None:
    phone = {"details": {"type": "PHONE", "phone": "+5215512345678"}, "state": "NEVER_CONFIRMED"}
    entity = await sim.upsert(phone)

    response = await sim.client.post("/_anonymize", json={"phone": "+5215512345678"})
    assert response.json() == {"id": entity["id"]}
    assert (await sim.client.get(f"{BASE_PATH}/{entity['id']}")).status_code == 404

    deleted = (await sim.events())[-1]
    assert (deleted.event.slug, deleted.event.entityId) == ("deleted", entity["id"])
    assert deleted.event.triggeredByAnonymizeRequest is True
    inspect = (await sim.client.get("/_inspect")).json()
    assert all(entry["path"] != "/_anonymize" for entry in inspect["requests"])  # a control route


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"email": "nobody@example.com"}', 404),
        (b'{"email": "not-an-email"}', 400),
        (b"{}", 400),
        (b"[1]", 400),
        (b"{", 400),
    ],
)
async def test_anonymize_refuses_an_unknown_or_malformed_address(sim: Sim, body: bytes, status: int) -> None:
    await sim.upsert(email_consent())
    await sim.sender.idle()
    sim.receiver.bodies.clear()
    assert (await sim.client.post("/_anonymize", content=body)).status_code == status
    assert await sim.events() == []


# --- delivery --------------------------------------------------------------------------------------------
async def test_duplicates_send_every_event_again_with_the_same_id(make_client: ClientFactory, clock: FakeClock) -> None:
    sim = simulator(make_client, clock, duplicates=1)
    await sim.upsert(email_consent())
    await sim.upsert(email_consent(state="NEVER_CONFIRMED", lastConfirmationActivity=...))
    events = await sim.events()
    assert [item.event.slug for item in events] == ["created", "created", "updated", "updated"]
    assert events[0].event.id == events[1].event.id != events[2].event.id == events[3].event.id


async def test_reorder_sends_a_burst_newest_first(make_client: ClientFactory, clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    sim = simulator(make_client, clock, reorder=True, delay_s=1, sleep=held)
    first = await sim.upsert(email_consent())
    clock.now += 1
    await sim.upsert(email_consent(state="NEVER_CONFIRMED", lastConfirmationActivity=...))
    clock.now += 1
    await sim.upsert(email_consent(state="CONFIRMED"))  # the confirmation activity is still stored
    gate.set()

    events = await sim.events()
    assert [item.consent.revision for item in events] == ["3", "2", "1"]
    assert {item.event.entityId for item in events} == {first["id"]}
    assert [item.event.eventTime for item in events] == sorted((item.event.eventTime for item in events), reverse=True)


async def test_the_answer_never_waits_for_delivery(make_client: ClientFactory, clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    sim = simulator(make_client, clock, delay_s=5, sleep=held)
    await sim.upsert(email_consent())  # answered while the event is still held back
    state = (await sim.client.get("/_inspect")).json()["state"]["webhooks"]
    assert (state["pending"], state["sent"], sim.receiver.bodies) == (1, 0, [])
    gate.set()
    assert [item.event.slug for item in await sim.events()] == ["created"]


async def test_a_failed_send_is_redelivered_resigned_with_the_same_event_id(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    sleeps = Sleeps(clock)
    sim = simulator(make_client, clock, Receiver(statuses=(503, 503)), sleep=sleeps, ttl_s=300, redelivery=(2, 5))
    start = int(clock.now)
    await sim.upsert(email_consent())
    events = await sim.events()

    assert len(events) == 3
    assert len({item.event.id for item in events}) == 1
    assert [item.claims["iat"] for item in events] == [start, start + 2, start + 7]  # signed afresh each time
    assert [item.claims["exp"] - item.claims["iat"] for item in events] == [300] * 3
    assert sleeps.waits == [0, 2, 5]  # the burst's delay_s, then the ladder
    state = (await sim.client.get("/_inspect")).json()["state"]["webhooks"]
    assert {key: state[key] for key in ("sent", "failed", "dropped", "pending", "lastError")} == {
        "sent": 1,
        "failed": 2,
        "dropped": 0,
        "pending": 0,
        "lastError": "HTTP 503",
    }
    assert state["recent"] == [
        {"id": events[0].event.id, "eventType": EVENT_CREATED, "entityId": events[0].event.entityId}
        | {"attempts": 3, "status": "sent"}
    ]


async def test_a_connection_error_is_redelivered_and_the_ladder_ends(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("refused", request=request)

    app = create_app(
        clock=clock,
        webhooks=Webhooks(url=URL, transport=httpx.MockTransport(refuse), sleep=Sleeps(clock), redelivery=(1, 2)),
    )
    client = make_client(app, headers=AUTH)
    assert (await client.post(f"{BASE_PATH}/upsert", json={"marketingConsent": email_consent()})).status_code == 200
    await app.state.webhooks.idle()

    assert len(attempts) == 3
    state = (await client.get("/_inspect")).json()["state"]["webhooks"]
    assert (state["sent"], state["failed"], state["dropped"], state["pending"]) == (0, 3, 1, 0)
    assert (state["lastError"], state["recent"][0]["status"]) == ("ConnectError", "dropped")


async def test_inspect_shows_counters_without_jwts_or_keys(sim: Sim) -> None:
    await sim.upsert(email_consent())
    await sim.sender.idle()
    text = (await sim.client.get("/_inspect")).text
    assert '"webhooks"' in text and '"sent":1' in text.replace(" ", "")
    assert "eyJ" not in text and "PRIVATE KEY" not in text
    await sim.client.post("/_reset")
    state = (await sim.client.get("/_inspect")).json()["state"]
    assert state == {"consents": {}, "refused_addresses": [], "webhooks": state["webhooks"]}
    assert (state["webhooks"]["sent"], state["webhooks"]["recent"]) == (0, [])


@pytest.mark.parametrize("setting", [{"duplicates": -1}, {"delay_s": -1}, {"ttl_s": 0}, {"redelivery": (1, -1)}])
def test_settings_that_cannot_work_are_refused(setting: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        Webhooks(url=URL, **setting)


async def test_events_url_means_test_defaults_and_none_sends_nothing() -> None:
    app = create_app(events_url=URL)
    sender = app.state.webhooks
    assert (sender.settings.url, sender.settings.instance_id) == (URL, "demo-site")
    assert sender.settings.private_key == TEST_PRIVATE_KEY
    assert create_app().state.webhooks is None


# --- consent-gateway simulate --events-url ------------------------------------------------------------------
def test_simulate_sends_a_providers_events_where_told(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Starlette] = []
    monkeypatch.setattr(serve_command, "configure_logging", lambda: None)  # leaves the test run's logging be
    monkeypatch.setattr(serve_command, "serve_app", lambda app, host, port: served.append(app))
    result = CliRunner().invoke(cli, ["simulate", "--events-url", f"wix={URL}"])
    assert result.exit_code == 0, result.output
    [wix] = [route.app for route in served[0].routes if isinstance(route, Mount) and route.path == "/wix"]
    assert isinstance(wix, Starlette) and wix.state.webhooks.settings.url == URL


@pytest.mark.parametrize("value", ["wix", f"acme={URL}", "wix=ftp://x", f"masivo={URL}"])
def test_simulate_refuses_an_events_url_it_cannot_use(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setattr(serve_command, "configure_logging", lambda: None)
    monkeypatch.setattr(serve_command, "serve_app", lambda app, host, port: pytest.fail("served"))
    result = CliRunner().invoke(cli, ["simulate", "--events-url", value])
    assert result.exit_code == 2 and "--events-url" in result.output, result.output

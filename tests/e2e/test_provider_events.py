"""Wix webhooks in: a verified event goes through the read-back rules at once, with no run; nothing
unverified is stored; duplicated, replayed, reordered and echoed events never let an older or the
gateway's own state win; a deletion or an anonymization is reported, never adopted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from adapters.simulators.wix_webhooks import TEST_PUBLIC_KEY, Webhooks
from gateway.http.app import create_app
from gateway.store import Store
from schemas.api import EventStatus, SyncStatus
from schemas.consent import PurposeState
from tests.e2e.test_adoption_trust import (
    at_wix,
    intempt_actions,
    masivo_purposes,
    purpose,
    row,
    sources,
    wix_states,
)
from tests.wix_events import event, key_pair, signed
from tests.world import NOW, World

ANA = "cust-1@example.com"
SOON = (NOW + timedelta(minutes=1)).isoformat()  # a person's change at Wix, after the subject's address came


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    world = World(store, providers={"wix": {"webhook_public_key": key_pair("wix")[1]}})
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()


async def held_at_wix(world: World, address: str) -> dict[str, Any]:
    """The consent the Wix simulator holds for an address, as its webhook would carry it."""
    consents = (await world.inspect("wix"))["state"]["consents"].values()
    found: dict[str, Any] = next(c for c in consents if c["details"].get("email") == address)
    return found


async def announce(world: World, entity: dict[str, Any], slug: str = "updated", **fields: Any) -> Any:
    """Wix's webhook for ``entity``, a second later: stored by the gateway (the API's use case), not yet acted on."""
    world.now += timedelta(seconds=1)
    data = event(slug, entity, **({"id": str(uuid.uuid4())} | fields))
    body = signed(data, expires=world.now + timedelta(minutes=5))
    return await world.gateway.receive_events("wix", body, {})


async def settle(world: World) -> None:
    """The worker acts on the stored events, then (a second later) delivers what they queued."""
    while await world.gateway.events.step():
        pass
    world.now += timedelta(seconds=1)
    await world.gateway.worker.drain()


async def statuses(world: World) -> list[EventStatus]:
    return [found.status for found in reversed(await world.gateway.store.events.recent("wix", 50))]


async def test_a_revoke_at_wix_reaches_masivo_and_intempt_without_a_run(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    await at_wix(world, ANA, "REVOKED", SOON)

    await announce(world, await held_at_wix(world, ANA))
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await sources(world, "cust-1"))[0] == "provider:wix"
    assert (await masivo_purposes(world, "cust-1"))["email_marketing"] is False
    assert (await intempt_actions(world, "cust-1"))["email"] == "reject"
    assert await statuses(world) == [EventStatus.applied]
    assert await world.gateway.store.runs.recent(5) == [], "no read-back run was needed"
    assert (await row(world, "cust-1", "wix")).status is SyncStatus.in_sync


async def test_the_gateways_own_write_echoed_back_changes_nothing(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="denied")
    await world.gateway.worker.drain()
    echo = await held_at_wix(world, ANA)

    await announce(world, echo, slug="created")
    await settle(world)

    assert await sources(world, "cust-1") == ["web"]
    assert await statuses(world) == [EventStatus.ignored]


async def test_a_duplicate_or_replayed_event_is_stored_once(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    await at_wix(world, ANA, "REVOKED", SOON)
    body = signed(event("updated", await held_at_wix(world, ANA), id="wix-event-7"))

    first = await world.gateway.receive_events("wix", body, {})
    again = await world.gateway.receive_events("wix", body, {})
    await settle(world)
    replayed = await world.gateway.receive_events("wix", body, {})  # after it was acted on, too
    await settle(world)

    assert (first.received, again.received, again.duplicates, replayed.duplicates) == (1, 0, 1, 1)
    assert [entry.decision.source for entry in await world.gateway.store.ledger.history("cust-1", 9)].count(
        "provider:wix"
    ) == 1


async def test_reordered_events_leave_the_newest_genuine_state(world: World) -> None:
    """The person opts out, then back in, at Wix; the webhooks arrive the other way round."""
    await world.decide("cust-1", 10, email_marketing="denied")
    await world.gateway.worker.drain()
    world.now += timedelta(minutes=10)  # an opt-in counts once the address is the subject's beyond the clock skew
    await at_wix(world, ANA, "REVOKED", (NOW + timedelta(minutes=8)).isoformat())
    revoked = await held_at_wix(world, ANA)
    await at_wix(world, ANA, "CONFIRMED", (NOW + timedelta(minutes=9)).isoformat())
    confirmed = await held_at_wix(world, ANA)
    assert int(confirmed["revision"]) > int(revoked["revision"])

    await announce(world, confirmed)
    await settle(world)
    await announce(world, revoked)
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.granted
    assert await statuses(world) == [EventStatus.applied, EventStatus.ignored]
    assert (await wix_states(world))[ANA] == "CONFIRMED"


async def test_an_older_change_than_the_gateways_decision_is_not_adopted_and_wix_is_put_right(world: World) -> None:
    world.now = NOW - timedelta(hours=2)  # the gateway has known the address since then
    await world.decide("cust-1", 50, email_marketing="denied")
    world.now = NOW
    await world.gateway.worker.drain()
    await at_wix(world, ANA, "CONFIRMED", (NOW - timedelta(minutes=40)).isoformat())  # before the denial

    await announce(world, await held_at_wix(world, ANA))
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await wix_states(world))[ANA] == "REVOKED", "pushed again over the older opt-in"


async def test_a_provider_time_in_the_future_is_not_adopted(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="denied")
    await world.gateway.worker.drain()
    await at_wix(world, ANA, "CONFIRMED", "2031-01-01T00:00:00Z")

    await announce(world, await held_at_wix(world, ANA))
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await wix_states(world))[ANA] == "REVOKED"


async def test_an_opt_in_on_a_shared_address_is_never_adopted(world: World) -> None:
    shared = "family@example.com"
    await world.decide("cust-a", 10, email=shared, email_marketing="denied")
    await world.decide("cust-b", 20, email=shared, email_marketing="denied")
    await world.gateway.worker.drain()
    await at_wix(world, shared, "CONFIRMED", SOON)

    await announce(world, await held_at_wix(world, shared))
    await settle(world)

    for subject in ("cust-a", "cust-b"):
        assert await purpose(world, subject, "email_marketing") is PurposeState.denied
    assert (await wix_states(world))[shared] == "REVOKED"


@pytest.mark.parametrize("how", ["deleted", "anonymized"])
async def test_a_deletion_or_anonymization_is_reported_never_adopted(world: World, how: str) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    consent = await held_at_wix(world, ANA)
    gone = consent | {"state": "REVOKED", "lastRevokeActivity": {"source": "OTHER", "updatedDate": NOW.isoformat()}}

    if how == "deleted":
        await announce(world, consent, slug="deleted")
    else:
        await announce(world, gone, triggeredByAnonymizeRequest=True)
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.granted
    assert await sources(world, "cust-1") == ["web"]
    [found] = await world.gateway.store.events.recent("wix", 5)
    assert found.status is EventStatus.reported and "never adopted" in (found.outcome or "")
    assert (await row(world, "cust-1", "wix")).status is SyncStatus.diverged, "the row shows what Wix holds"


async def test_an_event_waits_while_a_push_to_wix_is_under_way(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    await at_wix(world, ANA, "REVOKED", SOON)
    await world.decide("cust-1", 12, sms_marketing="granted")  # queued for Wix, not yet delivered
    await announce(world, await held_at_wix(world, ANA))

    assert await world.gateway.events.step() is True
    assert await statuses(world) == [EventStatus.queued], "left queued while the push is under way"
    await world.gateway.worker.drain()
    world.now += timedelta(seconds=5)
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await masivo_purposes(world, "cust-1"))["email_marketing"] is False


async def test_an_event_whose_worker_died_is_acted_on_once_its_lease_runs_out(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    await at_wix(world, ANA, "REVOKED", SOON)
    await announce(world, await held_at_wix(world, ANA))

    claimed = await world.gateway.store.events.claim(world.now, 60, 10)  # a worker took it, then died
    assert len(claimed) == 1
    assert await world.gateway.events.step() is False, "leased: nobody else takes it meanwhile"
    world.now += timedelta(seconds=61)
    await settle(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    [found] = await world.gateway.store.events.recent("wix", 5)
    assert found.attempts == 2 and found.status is EventStatus.applied


# -- over HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(world.gateway, run_worker=False)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.mark.parametrize(
    "body",
    [
        signed(event(), key="someone-else"),
        signed(event(), instance="another-site"),
        signed(event(), expires=NOW - timedelta(hours=1)),
        b"",
        b"eyJhbGciOiJub25lIn0.e30.",
    ],
    ids=["other-key", "other-site", "expired", "empty", "alg-none"],
)
async def test_an_unverified_webhook_is_a_401_and_records_nothing(
    api: httpx.AsyncClient, world: World, body: bytes
) -> None:
    response = await api.post("/v1/providers/wix/events", content=body)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await world.gateway.store.events.recent("wix", 5) == []


async def test_a_verified_webhook_is_a_200_and_stored(api: httpx.AsyncClient, world: World) -> None:
    body = signed(event(), expires=world.now + timedelta(minutes=5))
    response = await api.post("/v1/providers/wix/events", content=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1, "duplicates": 0}
    again = await api.post("/v1/providers/wix/events", content=body)
    assert again.json() == {"received": 0, "duplicates": 1}


async def test_a_provider_that_sends_no_events_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/providers/masivo/events", content=b"x")
    assert response.status_code == 404
    assert "wix" in response.json()["detail"]


# -- with the Wix simulator's own signed webhooks -----------------------------------------------------------


class Gateway(httpx.AsyncBaseTransport):
    """The gateway's API as the Wix simulator reaches it; ``down`` refuses that many connections first."""

    def __init__(self) -> None:
        self.app: Any = None
        self.down = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.down -= 1
            raise httpx.ConnectError("the gateway is down", request=request)
        return await httpx.ASGITransport(app=self.app).handle_async_request(request)


async def no_wait(_seconds: float) -> None:
    """The simulator's redelivery ladder and delays, without the waiting."""


@pytest.fixture(params=[{}, {"duplicates": 1, "reorder": True}], ids=["plain", "duplicated-reordered"])
async def wired(store: Store, request: pytest.FixtureRequest) -> AsyncIterator[tuple[World, Gateway]]:
    """The Wix simulator sends its signed webhooks to the gateway's events endpoint, on the test's clock."""
    receiver = Gateway()
    hooks = Webhooks(
        url="http://gateway/v1/providers/wix/events",
        instance_id="site",
        transport=receiver,
        clock=lambda: world.now.timestamp(),
        sleep=no_wait,
        **request.param,
    )
    world = World(
        store,
        providers={"wix": {"webhook_public_key": TEST_PUBLIC_KEY}},
        simulator_options={"wix": {"webhooks": hooks}},
    )
    receiver.app = create_app(world.gateway, run_worker=False)
    yield world, receiver
    await world.gateway.worker.stop()
    await world.control.aclose()


def sender(world: World) -> Any:
    [wix] = [route.app for route in world.simulators.routes if getattr(route, "path", "") == "/wix"]  # type: ignore[attr-defined]
    return wix.state.webhooks


async def delivered(world: World) -> None:
    """Every webhook the simulator sent so far is in, then acted on, then what it queued delivered."""
    await sender(world).idle()
    await settle(world)


async def test_a_revoke_at_the_wix_simulator_reaches_masivo_and_intempt_by_its_webhook(
    wired: tuple[World, Gateway],
) -> None:
    world, _ = wired
    await world.decide("cust-1", 10, email_marketing="granted", sms_marketing="granted")
    await world.gateway.worker.drain()
    await delivered(world)  # the gateway's own writes, echoed back
    assert await sources(world, "cust-1") == ["web"], "an echo of the gateway's own write changes nothing"

    world.now += timedelta(minutes=10)
    await at_wix(world, ANA, "REVOKED", (NOW + timedelta(minutes=9)).isoformat())
    await delivered(world)

    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert await purpose(world, "cust-1", "sms_marketing") is PurposeState.granted
    assert (await masivo_purposes(world, "cust-1"))["email_marketing"] is False
    assert (await intempt_actions(world, "cust-1"))["email"] == "reject"
    assert await world.gateway.store.runs.recent(5) == []
    history = [entry.decision.source for entry in await world.gateway.store.ledger.history("cust-1", 9)]
    assert history == ["provider:wix", "web"], "adopted once, whatever the copies and their order"
    assert (await row(world, "cust-1", "wix")).status is SyncStatus.in_sync


async def test_a_webhook_sent_while_the_gateway_is_down_is_not_lost(wired: tuple[World, Gateway]) -> None:
    world, receiver = wired
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    await delivered(world)

    world.now += timedelta(minutes=10)
    receiver.down = 2  # the revoke's first sends find nobody listening; Wix redelivers
    await at_wix(world, ANA, "REVOKED", (NOW + timedelta(minutes=9)).isoformat())
    await delivered(world)

    assert sender(world).view()["failed"] == 2
    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await masivo_purposes(world, "cust-1"))["email_marketing"] is False

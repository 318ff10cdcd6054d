"""A request that went unanswered may still land at the provider, after a newer push: a timed-out
push, or one in flight when its worker died. The gateway then does not trust what it acknowledged and
pushes the pair again once such a request can no longer land (twice the provider's timeout), so an
old grant landing late never outlives a newer opt-out."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from gateway.config import Settings
from gateway.service import Gateway
from gateway.store import Store
from schemas.api import DeliveryStatus
from tests.fakes import fake_adapter
from tests.unit.test_worker import NOW, post
from tests.unit.test_worker_outcomes import Clock
from tests.world import Sleeps

TIMEOUT_S = 10.0
SETTLED = timedelta(seconds=2 * TIMEOUT_S)


class SlowProvider:
    """Holds one consent per subject. A request it is told to ``delay`` times out at the gateway, but is
    kept and applied when ``land`` is called: the provider got it, and answered too late."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, str]] = {}
        self.delay = 0
        self.kept: list[httpx.Request] = []
        self.pushes = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.pushes += 1
        if self.delay:
            self.delay -= 1
            self.kept.append(request)
            raise httpx.ReadTimeout("no answer in time", request=request)
        self.apply(request)
        return httpx.Response(200, json={})

    def apply(self, request: httpx.Request) -> None:
        self.held[request.url.path.rsplit("/", 1)[-1]] = json.loads(request.content)

    def land(self) -> None:
        for request in self.kept:
            self.apply(request)
        self.kept.clear()


@pytest.fixture
def provider() -> SlowProvider:
    return SlowProvider()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gateway(store: Store, provider: SlowProvider, clock: Clock) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        Settings(retry={"attempts": 2, "ladder_s": [60, 600]}, worker={"lease_s": 60}),
        store=store,
        adapters={"fake": fake_adapter(timeout_s=TIMEOUT_S)},
        transports={"fake": httpx.MockTransport(provider)},
        clock=clock,
        sleep=Sleeps(),
    )
    yield gateway
    await gateway.worker.stop()


async def test_a_timed_out_grant_landing_after_the_opt_out_is_overwritten(
    gateway: Gateway, provider: SlowProvider, clock: Clock
) -> None:
    provider.delay = 1  # the grant's first try times out; its in-process retry is answered
    await post(gateway, minutes=0, email_marketing="granted")
    await gateway.worker.drain()
    await post(gateway, minutes=5, email_marketing="denied")
    await gateway.worker.drain()
    assert provider.held["cust-1"] == {"email": "denied"}, "the opt-out went out at once"
    provider.land()  # the first try of the grant arrives now, after the opt-out
    assert provider.held["cust-1"] == {"email": "granted"}

    clock.now = NOW + SETTLED - timedelta(seconds=1)
    await gateway.worker.drain()
    assert provider.held["cust-1"] == {"email": "granted"}, "not pushed again before the timeout has passed twice"
    clock.now = NOW + SETTLED
    await gateway.worker.drain()
    assert provider.held["cust-1"] == {"email": "denied"}, "pushed again once nothing can overtake it"


async def test_an_answered_push_is_trusted_and_not_pushed_again(
    gateway: Gateway, provider: SlowProvider, clock: Clock
) -> None:
    await post(gateway, minutes=0, email_marketing="granted")
    await gateway.worker.drain()
    clock.now = NOW + SETTLED * 2
    await gateway.worker.drain()
    assert provider.pushes == 1
    held = await gateway.store.outbox.acknowledged("cust-1", "fake")
    assert held.acknowledged == {"email": "granted"}


async def test_a_push_taken_over_from_a_lapsed_lease_distrusts_and_rechecks(
    gateway: Gateway, store: Store, provider: SlowProvider, clock: Clock
) -> None:
    await post(gateway, minutes=0, email_marketing="granted")
    await gateway.worker.drain()
    await post(gateway, minutes=5, email_marketing="denied")
    [dead_workers] = await store.outbox.claim("fake", 10, NOW, 60, ladder_steps=2)  # a worker that then dies
    assert not dead_workers.lost
    clock.now = NOW + timedelta(seconds=61)  # its lease ran out, no outcome recorded
    await gateway.worker.drain()  # another worker takes the delivery over
    assert provider.held["cust-1"] == {"email": "denied"}
    held = await store.outbox.acknowledged("cust-1", "fake")
    assert held.acknowledged == {}, "what the dead worker's request left there is unknown"
    page = await store.outbox.list(provider="fake", status=DeliveryStatus.pending)
    assert [(item.next_attempt_at, item.recheck) for item in page.items] == [(clock.now + SETTLED, True)]
    assert uuid.UUID(page.items[0].id).version == 7, "a queued recheck's id is made as every delivery's"

    provider.held["cust-1"] = {"email": "granted"}  # the dead worker's grant lands late
    clock.now += SETTLED
    await gateway.worker.drain()
    assert provider.held["cust-1"] == {"email": "denied"}


async def test_a_newer_decision_does_not_wait_for_a_recheck(
    gateway: Gateway, provider: SlowProvider, clock: Clock
) -> None:
    provider.delay = 1
    await post(gateway, minutes=0, email_marketing="granted")
    await gateway.worker.drain()  # a recheck is now due in twice the timeout
    clock.now = NOW + timedelta(seconds=1)
    await post(gateway, minutes=5, email_marketing="denied")
    await gateway.worker.drain()
    assert provider.held["cust-1"] == {"email": "denied"}, "the opt-out did not ride on the later recheck"
    provider.land()
    clock.now = NOW + SETTLED
    await gateway.worker.drain()
    assert provider.held["cust-1"] == {"email": "denied"}

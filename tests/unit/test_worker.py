"""The worker against a scripted provider: retries, Retry-After, timeouts, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gateway.config import Settings
from gateway.service import Gateway
from gateway.store import Store
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.fakes import FAKE_SECRET, fake_adapter
from tests.world import Sleeps

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
Script = list[Callable[[httpx.Request], httpx.Response]]


def reply(status: int, body: dict[str, str] | None = None, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body or {}, headers=headers)


def hang(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


class Provider:
    """Answers requests from a script, then 200s; remembers what it was sent."""

    def __init__(self) -> None:
        self.script: Script = []
        self.received: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        return self.script.pop(0)(request) if self.script else httpx.Response(200, json={})


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def gateway(store: Store, provider: Provider, sleeps: Sleeps) -> AsyncIterator[Gateway]:
    settings = Settings(retry={"attempts": 3, "ladder_s": [60, 600]})
    gateway = Gateway(
        settings,
        store=store,
        adapters={"fake": fake_adapter()},
        transports={"fake": httpx.MockTransport(provider)},
        clock=lambda: NOW,
        sleep=sleeps,
    )
    yield gateway
    await gateway.worker.stop()


async def post(gateway: Gateway, minutes: int = 0, **purposes: str) -> str:
    decision = Decision.model_validate(
        {
            "subject": {"id": "cust-1"},
            "purposes": purposes or {"email_marketing": "granted"},
            "occurred_at": NOW - timedelta(hours=1, minutes=-minutes),
        },
        strict=False,
    )
    return (await gateway.record(decision)).id


async def delivery(gateway: Gateway, decision_id: str):  # type: ignore[no-untyped-def]
    found = await gateway.store.ledger.decision(decision_id)
    assert found is not None
    return [carried for carried in found.deliveries if not carried.recheck][0]  # a recheck follows a timeout


async def test_success_records_what_the_provider_acknowledged(gateway: Gateway, provider: Provider) -> None:
    decision_id = await post(gateway)
    await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert (result.status, result.attempts) == (DeliveryStatus.succeeded, 1)
    assert provider.received[0].headers["authorization"] == f"Bearer {FAKE_SECRET}"
    subject = await gateway.subject("cust-1")
    assert subject is not None and subject.providers[0].status == "unobservable", "the fake provider has no read API"
    assert subject.providers[0].acknowledged == {"email": "granted"}


@pytest.mark.parametrize(
    "failure",
    [reply(503), reply(500), reply(408), reply(429), hang],
    ids=["503", "500", "408", "429", "timeout"],
)
async def test_transient_failures_are_retried_in_process(
    gateway: Gateway, provider: Provider, sleeps: Sleeps, failure: Callable[[httpx.Request], httpx.Response]
) -> None:
    provider.script = [failure, failure]
    decision_id = await post(gateway)
    await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert (result.status, result.attempts) == (DeliveryStatus.succeeded, 3)
    assert len(sleeps.calls) == 2


async def test_retry_after_is_honoured(gateway: Gateway, provider: Provider, sleeps: Sleeps) -> None:
    provider.script = [reply(429, **{"Retry-After": "7"})]
    await post(gateway)
    await gateway.worker.drain()
    assert sleeps.calls == [7.0]


async def test_a_long_retry_after_reschedules_durably_instead_of_sleeping(
    gateway: Gateway, provider: Provider, sleeps: Sleeps
) -> None:
    provider.script = [reply(429, **{"Retry-After": "900"})]
    decision_id = await post(gateway)
    await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert result.status is DeliveryStatus.retrying and sleeps.calls == []
    assert result.next_attempt_at is not None and result.next_attempt_at >= NOW + timedelta(seconds=900)


async def test_permanent_failure_is_dead_with_the_providers_text(gateway: Gateway, provider: Provider) -> None:
    provider.script = [reply(400, {"error": "customer is archived"})]
    decision_id = await post(gateway)
    await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert (result.status, result.attempts, result.last_status_code) == (DeliveryStatus.dead, 1, 400)
    assert result.last_error is not None and "customer is archived" in result.last_error


async def test_exhausted_retries_climb_the_ladder_then_die(gateway: Gateway, provider: Provider) -> None:
    provider.script = [reply(503)] * 9
    decision_id = await post(gateway)
    for hours in range(3):
        gateway.worker.clock = lambda hours=hours: NOW + timedelta(hours=hours)  # type: ignore[misc]
        await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert result.status is DeliveryStatus.dead and result.attempts == 9
    assert result.last_error is not None and "gave up after 2 retries" in result.last_error


async def test_a_secret_echoed_by_the_provider_never_reaches_the_record(gateway: Gateway, provider: Provider) -> None:
    provider.script = [reply(401, {"error": f"bad key {FAKE_SECRET}"})]
    decision_id = await post(gateway)
    await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert result.last_error is not None and FAKE_SECRET not in result.last_error


async def test_coalesced_decisions_are_sent_once_with_the_newest_state(gateway: Gateway, provider: Provider) -> None:
    first = await post(gateway, 0, email_marketing="granted")
    second = await post(gateway, 5, email_marketing="denied")
    await gateway.worker.drain()
    assert [r.content for r in provider.received] == [b'{"email":"denied"}']
    statuses = [(await delivery(gateway, d)).status for d in (first, second)]
    assert statuses == [DeliveryStatus.succeeded, DeliveryStatus.succeeded]


async def test_a_change_undone_before_it_was_sent_sends_nothing(gateway: Gateway, provider: Provider) -> None:
    await post(gateway, 0, email_marketing="granted")
    await gateway.worker.drain()
    await post(gateway, 5, email_marketing="denied")
    undone = await post(gateway, 10, email_marketing="granted")
    await gateway.worker.drain()
    assert len(provider.received) == 1
    assert (await delivery(gateway, undone)).status is DeliveryStatus.skipped


async def test_a_dead_delivery_replays_to_success_with_the_newest_state(gateway: Gateway, provider: Provider) -> None:
    provider.script = [reply(400, {"error": "account suspended"})]
    first = await post(gateway, 0, email_marketing="granted")
    await gateway.worker.drain()
    dead = await delivery(gateway, first)
    assert dead.status is DeliveryStatus.dead

    assert await gateway.store.outbox.replay(NOW, delivery_id=dead.id) == 1
    assert await gateway.store.outbox.replay(NOW, delivery_id=dead.id) == 0, "only dead deliveries replay"
    await post(gateway, 5, sms_marketing="denied")
    await gateway.worker.drain()
    replayed = await gateway.store.outbox.get(dead.id)
    assert replayed is not None and replayed.status is DeliveryStatus.succeeded
    assert provider.received[1].content == b'{"email":"granted","sms":"denied"}'
    assert replayed.attempt_log is not None
    assert [a.outcome for a in replayed.attempt_log] == ["permanent", "succeeded"]
    assert replayed.attempt_log[0].status_code == 400 and "account suspended" in (replayed.attempt_log[0].error or "")


async def test_the_running_worker_delivers_without_being_driven(gateway: Gateway) -> None:
    gateway.worker.start()
    decision_id = await post(gateway)
    found = await gateway.wait_until_final(decision_id, 5)
    assert found.deliveries[0].status is DeliveryStatus.succeeded
    await asyncio.sleep(0)


async def test_a_429_reschedules_no_sooner_than_a_minute(gateway: Gateway, provider: Provider) -> None:
    provider.script = [reply(429)] * 3
    decision_id = await post(gateway)
    await gateway.worker.drain()
    result = await delivery(gateway, decision_id)
    assert result.status is DeliveryStatus.retrying
    assert result.next_attempt_at is not None and result.next_attempt_at >= NOW + timedelta(seconds=60)


async def test_a_slow_provider_never_delays_another(store: Store, sleeps: Sleeps) -> None:
    release = asyncio.Event()

    async def stuck(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={})

    gateway = Gateway(
        Settings(),
        store=store,
        adapters={"slow": fake_adapter(timeout_s=3600), "fast": fake_adapter()},
        transports={"slow": httpx.MockTransport(stuck), "fast": httpx.MockTransport(lambda r: httpx.Response(200))},
        clock=lambda: NOW,
        sleep=sleeps,
    )
    gateway.worker.start()
    decision_id = await post(gateway)
    for _ in range(200):
        statuses = {d.provider: d.status for d in (await gateway.store.ledger.decision(decision_id)).deliveries}
        if statuses["fast"] is DeliveryStatus.succeeded:
            break
        await gateway.worker.wait_for_change(0.05)
    assert statuses == {"fast": DeliveryStatus.succeeded, "slow": DeliveryStatus.sending}
    release.set()
    final = await gateway.wait_until_final(decision_id, 5)
    assert {d.status for d in final.deliveries} == {DeliveryStatus.succeeded}
    await gateway.worker.stop()


class Ticker:
    """A sleep that ends only when the test calls ``tick``."""

    def __init__(self) -> None:
        self.asleep, self.wake = asyncio.Event(), asyncio.Event()
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.asleep.set()
        await self.wake.wait()
        self.wake.clear()

    async def tick(self) -> None:
        """End one sleep and return once the sleeper has done its work and sleeps again."""
        await self.asleep.wait()
        self.asleep.clear()
        self.wake.set()
        await self.asleep.wait()


async def test_a_slow_push_keeps_its_lease_so_it_is_never_claimed_twice(store: Store, sleeps: Sleeps) -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={})

    now = NOW
    gateway = Gateway(
        Settings(worker={"lease_s": 60}),
        store=store,
        adapters={"fake": fake_adapter(timeout_s=3600)},
        transports={"fake": httpx.MockTransport(slow)},
        clock=lambda: now,
        sleep=sleeps,
    )
    gateway.worker.beat = heartbeat = Ticker()
    decision_id = await post(gateway)
    await gateway.worker.dispatch()
    for _ in range(3):  # three lease lengths with no answer from the provider
        now += timedelta(seconds=50)
        await heartbeat.tick()
        assert await gateway.store.outbox.claim("fake", 10, now + timedelta(seconds=50), 60, ladder_steps=7) == []
    assert heartbeat.calls == [20.0] * 4
    release.set()
    await gateway.worker.drain()
    assert (await delivery(gateway, decision_id)).status is DeliveryStatus.succeeded
    await gateway.worker.stop()


async def test_stopping_while_a_claim_is_committing_still_delivers_what_it_leased(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM can land while a claim is being written: the rows it leased are delivered
    before the worker exits, not left 'sending' until their lease runs out."""
    claimed, go = asyncio.Event(), asyncio.Event()
    claim = gateway.store.outbox.claim

    async def slow_to_return(*args: object, **kwargs: object) -> object:
        leased = await claim(*args, **kwargs)  # type: ignore[arg-type]
        if leased:
            claimed.set()
            await go.wait()
        return leased

    monkeypatch.setattr(gateway.store.outbox, "claim", slow_to_return)
    decision_id = await post(gateway)
    gateway.worker.start()
    await claimed.wait()
    stopping = asyncio.create_task(gateway.worker.stop())
    await asyncio.sleep(0)
    go.set()
    await stopping
    assert (await delivery(gateway, decision_id)).status is DeliveryStatus.succeeded

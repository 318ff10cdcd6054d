"""The durable retry ladder, step by step: its documented steps, their ±20 % jitter, the 60 s floor
after a 429 and the cap on Retry-After, on an injected clock and a seeded random."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.config import RetrySettings, Settings
from gateway.delivery import worker
from gateway.service import Gateway
from gateway.store import Store
from schemas.api import DeliveryOut, DeliveryStatus
from schemas.consent import Decision
from tests.fakes import fake_adapter
from tests.unit.test_worker import NOW, Provider, reply
from tests.world import Sleeps

DOCUMENTED_LADDER = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]  # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
SUBJECTS = 50


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's jitter drawn from a seeded generator: the same delays on every run."""
    monkeypatch.setattr(worker, "random", random.Random(16))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
async def made(store: Store, clock: Clock, provider: Provider) -> AsyncIterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for one in gateways:
        await one.worker.stop()


def make(made: list[Gateway], store: Store, clock: Clock, provider: Provider, **retry: Any) -> Gateway:
    """A gateway whose only provider answers from ``provider``'s script; ``retry`` over the defaults."""
    one = Gateway(
        Settings(retry=retry),
        store=store,
        adapters={"fake": fake_adapter()},
        transports={"fake": httpx.MockTransport(provider)},
        clock=clock,
        sleep=Sleeps(),
    )
    made.append(one)
    return one


async def post(one: Gateway, subject: str = "cust-1") -> None:
    decision = Decision.model_validate(
        {
            "subject": {"id": subject},
            "purposes": {"email_marketing": "granted"},
            "occurred_at": NOW - timedelta(hours=1),
        },
        strict=False,
    )
    await one.record(decision)


async def deliveries(one: Gateway) -> list[DeliveryOut]:
    return (await one.store.outbox.list(provider="fake", limit=SUBJECTS + 1)).items


async def waited(one: Gateway, clock: Clock) -> float:
    """Seconds from now until the only delivery, rescheduled, is due again."""
    [found] = await deliveries(one)
    assert found.status is DeliveryStatus.retrying and found.next_attempt_at is not None, found
    return (found.next_attempt_at - clock.now).total_seconds()


def test_the_default_ladder_is_the_documented_one() -> None:
    retry = RetrySettings()
    assert retry.ladder_s == DOCUMENTED_LADDER
    assert (retry.jitter, retry.min_after_429_s, retry.retry_after_cap_s) == (0.2, 60.0, 3600.0)


async def test_each_reschedule_waits_its_own_ladder_step_then_the_delivery_dies(
    made: list[Gateway], store: Store, clock: Clock, provider: Provider
) -> None:
    provider.script = [reply(503)] * len(DOCUMENTED_LADDER) + [reply(503)]
    one = make(made, store, clock, provider, attempts=1, jitter=0)  # the default ladder, without jitter
    await post(one)
    steps = []
    for _ in DOCUMENTED_LADDER:
        await one.worker.drain()
        steps.append(await waited(one, clock))
        clock.now += timedelta(seconds=steps[-1])
    await one.worker.drain()
    assert steps == DOCUMENTED_LADDER
    [dead] = await deliveries(one)
    assert dead.status is DeliveryStatus.dead and dead.attempts == len(DOCUMENTED_LADDER) + 1
    assert dead.last_error is not None and dead.last_error.startswith("gave up after 7 retries")


async def test_each_step_is_jittered_within_twenty_percent_and_spread_across_it(
    made: list[Gateway], store: Store, clock: Clock, provider: Provider
) -> None:
    provider.script = [reply(503)] * SUBJECTS
    one = make(made, store, clock, provider, attempts=1, ladder_s=[100.0, 1000.0])
    for index in range(SUBJECTS):
        await post(one, f"cust-{index}")
    await one.worker.drain()
    found = await deliveries(one)
    assert len(found) == SUBJECTS and {d.status for d in found} == {DeliveryStatus.retrying}
    delays = sorted((d.next_attempt_at - NOW).total_seconds() for d in found if d.next_attempt_at)
    assert 80 <= delays[0] < 88 and 112 < delays[-1] <= 120, delays
    assert len(set(delays)) == SUBJECTS, "each delivery draws its own jitter"


async def test_a_429_with_a_short_retry_after_is_rescheduled_no_sooner_than_a_minute(
    made: list[Gateway], store: Store, clock: Clock, provider: Provider
) -> None:
    provider.script = [reply(429, **{"Retry-After": "2"})] * 3
    one = make(made, store, clock, provider, attempts=3, ladder_s=[5.0, 300.0])
    await post(one)
    await one.worker.drain()
    assert one.worker.sleep.calls == [2.0, 2.0]  # type: ignore[attr-defined]
    assert await waited(one, clock) == 60.0


async def test_a_429_retry_after_beyond_the_floor_is_honoured_to_the_second(
    made: list[Gateway], store: Store, clock: Clock, provider: Provider
) -> None:
    provider.script = [reply(429, **{"Retry-After": "90"})]
    one = make(made, store, clock, provider, attempts=3, ladder_s=[5.0, 300.0])
    await post(one)
    await one.worker.drain()
    assert one.worker.sleep.calls == []  # type: ignore[attr-defined]
    assert await waited(one, clock) == 90.0


@pytest.mark.parametrize(("cap", "expected"), [(None, 3600.0), (600.0, 600.0)], ids=["default-cap", "configured"])
async def test_a_retry_after_beyond_the_cap_waits_only_the_cap(
    made: list[Gateway], store: Store, clock: Clock, provider: Provider, cap: float | None, expected: float
) -> None:
    provider.script = [reply(503, **{"Retry-After": "86400"})]
    capped = {} if cap is None else {"retry_after_cap_s": cap}
    one = make(made, store, clock, provider, attempts=3, ladder_s=[5.0, 300.0], **capped)
    await post(one)
    await one.worker.drain()
    assert await waited(one, clock) == expected

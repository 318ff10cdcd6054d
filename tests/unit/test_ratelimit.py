"""The per-provider request budget, on an injected clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.ratelimit import RateLimit
from gateway.store import Store


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_requests_beyond_the_budget_wait_for_it() -> None:
    time = FakeTime()
    limit = RateLimit(200, clock=time.clock, sleep=time.sleep)  # Wix: 200 requests a minute
    for _ in range(200):
        await limit.acquire()
    assert 58.5 < time.now <= 60, "200 requests take about a minute, whatever the burst"
    assert all(wait <= 0.31 for wait in time.slept)


async def test_an_idle_budget_refills_but_bursts_at_most_a_second_worth() -> None:
    time = FakeTime()
    limit = RateLimit(120, clock=time.clock, sleep=time.sleep)
    time.now = 3600
    for _ in range(2):
        await limit.acquire()
    assert time.slept == []
    await limit.acquire()
    assert time.slept == [0.5]


async def test_concurrent_callers_queue_for_their_slots() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the clock stands still: all three arrive at once
        slept.append(seconds)

    limit = RateLimit(60, clock=lambda: 0.0, sleep=sleep)  # one a second, no burst
    await asyncio.gather(*(limit.acquire() for _ in range(3)))
    assert slept == [1.0, 2.0], "each caller waits for its own slot"


@pytest.mark.postgres
async def test_workers_on_one_postgresql_share_one_budget(database_url: str) -> None:
    """Three workers (three engines) reserve from one row: together they get the budget once,
    not three times (SQLite deployments run one worker, with the budget in the process)."""
    stores = [Store.from_url(database_url) for _ in range(3)]
    if stores[0].engine.dialect.name != "postgresql":
        pytest.skip("the shared budget lives in PostgreSQL")
    slots: list[float] = []

    async def sleep(seconds: float) -> None:  # when the reserved slot is, as seen on the way back
        slots.append(time.monotonic() + seconds)

    try:
        began = time.monotonic()
        budgets = [store.budget("wix", 600, sleep) for store in stores]  # 10 a second
        await asyncio.gather(*(budget.acquire() for budget in budgets for _ in range(20)))
    finally:
        for store in stores:
            await store.close()
    slots.sort()
    assert len(slots) >= 60 - 11, "all but the first burst wait for a slot"
    assert slots[-1] - began >= 4.5, "60 requests at 10 a second take 5 s, whoever sends them"
    busiest = max(sum(1 for other in slots if slot <= other < slot + 1) for slot in slots)
    assert busiest <= 11, f"{busiest} requests in one second: the budget was not shared"

"""The per-provider request budget, on an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, NamedTuple

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store import Store
from gateway.store.ratelimit import Budget, RateLimit, SharedBudget


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


async def test_an_admission_takes_a_whole_batch_of_slots_or_none() -> None:
    time = FakeTime()
    decisions = RateLimit(60, burst=5, clock=time.clock, sleep=time.sleep)  # one a second, five at once
    assert await decisions.admit(5) == 0.0, "a batch the size of the burst, after an idle spell"
    assert await decisions.admit(1) == 1.0
    time.now = 3.0
    assert await decisions.admit(4) == 1.0, "four more (slots 1 to 4): the last of them is a second away"
    assert await decisions.admit(3) == 0.0, "the refusal took nothing: three fit now"
    assert await decisions.admit(1) == 1.0


async def test_concurrent_callers_queue_for_their_slots() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the clock stands still: all three arrive at once
        slept.append(seconds)

    limit = RateLimit(60, clock=lambda: 0.0, sleep=sleep)  # one a second, no burst
    await asyncio.gather(*(limit.acquire() for _ in range(3)))
    assert slept == [1.0, 2.0], "each caller waits for its own slot"


class Reservation(NamedTuple):
    slot: datetime  # the slot it took, on the database's clock
    earliest: datetime  # when the reserving transaction began
    latest: datetime  # a statement after it, in that transaction


LAST: ContextVar[Reservation] = ContextVar("last_reservation")


class Reading:
    """A budget's connection that, after each reservation, reads the slot it took on the database's clock in
    the same transaction (the row still locked: no other reservation can come between)."""

    def __init__(self, conn: AsyncConnection, taken: list[Reservation]) -> None:
        self.conn = conn
        self.taken = taken

    async def execute(self, statement: Any, params: Any = None) -> Any:
        result = await self.conn.execute(statement, params)
        row = (await self.conn.execute(SLOT, {"provider": "wix"})).one()
        taken = Reservation(row.next_slot - INTERVAL, row.began, row.now)
        self.taken.append(taken)
        LAST.set(taken)  # per task: its own next sleep is for this slot
        return result


class Reserving:
    """The budget's engine, handing out ``Reading`` connections."""

    def __init__(self, engine: AsyncEngine, taken: list[Reservation]) -> None:
        self.engine = engine
        self.taken = taken

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Reading]:
        async with self.engine.begin() as conn:
            yield Reading(conn, self.taken)


SLOT = text(
    "SELECT next_slot, transaction_timestamp() AS began, statement_timestamp() AS now"
    " FROM provider_budgets WHERE provider = :provider"
)
INTERVAL = timedelta(seconds=0.1)  # 600 a minute
EPSILON = timedelta(microseconds=1)  # the database keeps microseconds


@pytest.mark.postgres
async def test_workers_on_one_postgresql_share_one_budget(database_url: str) -> None:
    """Three workers (three engines, two requests in flight each) reserve from one row: together they get
    the budget once, not three times (SQLite deployments run one worker, with the budget in the process).
    Every time is the database's, read in the reserving transaction: a loaded machine changes nothing."""
    stores = [Store.from_url(database_url) for _ in range(3)]
    if stores[0].engine.dialect.name != "postgresql":
        pytest.skip("the shared budget lives in PostgreSQL")
    taken: list[Reservation] = []
    slept: list[tuple[float, Reservation]] = []

    async def sleep(seconds: float) -> None:  # no real wait: what matters is the slot it was asked to wait for
        slept.append((seconds, LAST.get()))

    async def worker(budget: Budget) -> None:
        for _ in range(10):
            await budget.acquire()

    try:
        async with stores[0].engine.connect() as conn:
            began = (await conn.execute(text("SELECT statement_timestamp()"))).scalar_one()
        budgets = [store.budget("wix", 600, sleep) for store in stores]  # 10 a second, a second's worth of burst
        for budget in budgets:
            assert isinstance(budget, SharedBudget)
            budget.engine = Reserving(budget.engine, taken)  # type: ignore[assignment]
        await asyncio.gather(*(asyncio.create_task(worker(budget)) for budget in budgets for _ in range(2)))
    finally:
        for store in stores:
            await store.close()
    slots = sorted(reservation.slot for reservation in taken)
    assert len(slots) == 60
    assert all(later - earlier >= INTERVAL - EPSILON for earlier, later in pairwise(slots)), "one schedule for all"
    assert slots[-1] - began >= 59 * INTERVAL - EPSILON, "60 requests at 10 a second take 6 s, whoever sends them"
    busiest = max(sum(1 for other in slots if slot <= other < slot + timedelta(seconds=1)) for slot in slots)
    assert busiest <= 11, f"{busiest} requests in one second: the budget was not shared"
    for seconds, reservation in slept:  # each caller waits until its own slot, no sooner, no later
        waited = timedelta(seconds=seconds)
        assert (
            reservation.slot - reservation.latest - EPSILON
            <= waited
            <= reservation.slot - reservation.earliest + EPSILON
        )
    waiting = {reservation for _, reservation in slept}
    assert all(r.slot <= r.latest + EPSILON for r in taken if r not in waiting), "only a slot still ahead is waited for"
    assert all(r.slot >= r.earliest - timedelta(seconds=0.9) - EPSILON for r in taken), "a burst of a second at most"

"""A per-provider request budget (Wix documents 200 requests/min per app instance).

Both budgets reserve slots by the generic cell rate algorithm: each request takes the next
slot, ``60 / per_minute`` seconds after the previous one, and waits for it; an idle budget
lets at most a second's worth through at once. ``RateLimit`` keeps the schedule in the
process (one worker, SQLite); ``SharedBudget`` keeps it in one PostgreSQL row per provider,
so every worker of a deployment draws from the same budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

Sleep = Callable[[float], Awaitable[None]]


class Budget(Protocol):
    async def acquire(self) -> None:
        """Wait until one more request fits in the budget."""


def spacing(per_minute: float) -> tuple[float, float]:
    """Seconds between requests, and how far a request may run ahead of its slot (the burst:
    at most a second's worth after an idle spell)."""
    interval = 60.0 / per_minute
    return interval, max(0.0, per_minute / 60.0 - 1) * interval


class RateLimit:
    """One process's budget, on an injectable clock and sleep so tests check it without waiting."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.interval, self.tolerance = spacing(per_minute)
        self.clock = clock
        self.sleep = sleep
        self.next_slot = float("-inf")  # the "theoretical arrival time" of the next request

    async def acquire(self) -> None:
        now = self.clock()
        slot = max(self.next_slot, now - self.tolerance)
        self.next_slot = slot + self.interval  # reserved before sleeping: concurrent callers queue up
        if slot > now:
            await self.sleep(slot - now)


# One statement reserves the next slot and answers how long to wait for it, on the database's
# clock, so workers on several hosts share one schedule whatever their own clocks say.
RESERVE = text(
    """
    INSERT INTO provider_budgets (provider, next_slot)
    VALUES (:provider, statement_timestamp() + make_interval(secs => :interval))
    ON CONFLICT (provider) DO UPDATE SET next_slot =
        GREATEST(provider_budgets.next_slot, statement_timestamp() - make_interval(secs => :tolerance))
        + make_interval(secs => :interval)
    RETURNING EXTRACT(EPOCH FROM (next_slot - make_interval(secs => :interval) - statement_timestamp()))
    """
)


class SharedBudget:
    """A provider's budget shared by every worker on one PostgreSQL database."""

    def __init__(self, engine: AsyncEngine, provider: str, per_minute: float, *, sleep: Sleep = asyncio.sleep) -> None:
        self.engine = engine
        self.provider = provider
        self.interval, self.tolerance = spacing(per_minute)
        self.sleep = sleep

    async def acquire(self) -> None:
        params = {"provider": self.provider, "interval": self.interval, "tolerance": self.tolerance}
        async with self.engine.begin() as conn:
            wait = float((await conn.execute(RESERVE, params)).scalar_one())
        if wait > 0:
            await self.sleep(wait)

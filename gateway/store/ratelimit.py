"""Request budgets: a provider's (Wix documents 200 requests/min per app instance), which
workers wait for, and an API token's, which the API refuses above.

Every budget reserves slots by the generic cell rate algorithm: each request takes the next
slot, ``60 / per_minute`` seconds after the previous one; an idle budget lets a burst through
at once (a second's worth unless told otherwise). ``RateLimit`` keeps the schedule in the
process (SQLite: one process); ``SharedBudget`` and ``SharedAdmission`` keep it in one
PostgreSQL row per provider or token, so every process of a deployment draws from the same one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

Sleep = Callable[[float], Awaitable[None]]
ROUNDING_S = 1e-6


class Budget(Protocol):
    async def acquire(self) -> None:
        """Wait until one more request fits in the budget."""


class Admission(Protocol):
    async def admit(self, cost: int = 1) -> float:
        """Take ``cost`` slots if they are free now and answer 0; else take none and answer the
        seconds until they will be (``cost`` never more than the burst)."""


def spacing(per_minute: float, burst: float | None = None) -> tuple[float, float]:
    """Seconds between requests, and how far a request may run ahead of its slot: ``burst``
    requests at once after an idle spell (default: a second's worth)."""
    interval = 60.0 / per_minute
    burst = per_minute / 60.0 if burst is None else burst
    return interval, max(0.0, burst - 1) * interval


class RateLimit:
    """One process's budget, on an injectable clock and sleep so tests check it without waiting."""

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.interval, self.tolerance = spacing(per_minute, burst)
        self.clock = clock
        self.sleep = sleep
        self.next_slot = float("-inf")  # the "theoretical arrival time" of the next request

    async def acquire(self) -> None:
        now = self.clock()
        slot = max(self.next_slot, now - self.tolerance)
        self.next_slot = slot + self.interval  # reserved before sleeping: concurrent callers queue up
        if slot > now:
            await self.sleep(slot - now)

    async def admit(self, cost: int = 1) -> float:
        now = self.clock()
        last = max(self.next_slot, now - self.tolerance) + (cost - 1) * self.interval  # the last slot taken
        if last - now > ROUNDING_S:  # now - tolerance + (burst - 1) * interval may come back a hair above now
            return last - now
        self.next_slot = last + self.interval
        return 0.0


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


# Takes the slot only when it is free now (the WHERE holds, a row comes back); a refused
# request takes nothing, so a client hammering the API does not push its own slot further away.
# Several slots at once (a batch's decisions): ``:span`` is their length, and the last of them,
# ``:ahead`` after the first, must be free now.
ADMIT = text(
    """
    INSERT INTO token_budgets (token, next_slot)
    VALUES (
        :token,
        statement_timestamp() - make_interval(secs => :tolerance) + make_interval(secs => :span)
    )
    ON CONFLICT (token) DO UPDATE SET next_slot =
        GREATEST(token_budgets.next_slot, statement_timestamp() - make_interval(secs => :tolerance))
        + make_interval(secs => :span)
    WHERE GREATEST(token_budgets.next_slot, statement_timestamp() - make_interval(secs => :tolerance))
        + make_interval(secs => :ahead) <= statement_timestamp()
    RETURNING 0
    """
)
WAIT = text(
    """
    SELECT EXTRACT(EPOCH FROM (GREATEST(next_slot, statement_timestamp() - make_interval(secs => :tolerance))
        + make_interval(secs => :ahead) - statement_timestamp()))
    FROM token_budgets WHERE token = :token
    """
)


class SharedAdmission:
    """An API token's request limit shared by every API process on one PostgreSQL database."""

    def __init__(self, engine: AsyncEngine, token: str, per_minute: float, burst: float) -> None:
        self.engine = engine
        self.token = token
        self.interval, self.tolerance = spacing(per_minute, burst)

    async def admit(self, cost: int = 1) -> float:
        span, ahead = cost * self.interval, (cost - 1) * self.interval
        params = {"token": self.token, "tolerance": self.tolerance, "span": span, "ahead": ahead}
        async with self.engine.begin() as conn:
            if (await conn.execute(ADMIT, params)).first() is not None:
                return 0.0
            return max(0.0, float((await conn.execute(WAIT, params)).scalar_one()))

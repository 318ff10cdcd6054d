"""Scheduled expiries: a decision with ``expires_at`` that won purposes is scheduled in ``expiries``
in the same transaction that records it; due rows are claimed by their index (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so each expiry is applied by one worker) and applied in ONE transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.entries import Plan, lock_subjects, write
from gateway.store.tables import expiries

Planner = Callable[[Sequence[Mapping[Any, Any]], Mapping[str, Any]], list[Plan]]


class ExpiryQueue:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def apply_due(self, now: datetime, limit: int, planner: Planner) -> list[Plan] | None:
        """Up to ``limit`` due expiries, in one transaction: their subjects locked, the entries
        ``planner`` makes of them written, their rows deleted. The plans written; None when none was due."""
        async with self.engine.begin() as conn:
            claim = (
                select(expiries)
                .where(expiries.c.due_at <= now)
                .order_by(expiries.c.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            due = (await conn.execute(claim)).mappings().all()
            if not due:
                return None
            locked = await lock_subjects(conn, [row["subject_id"] for row in due], now)
            plans = planner(due, locked)
            if plans:
                await write(conn, plans, now)
            await conn.execute(delete(expiries).where(expiries.c.decision_id.in_([row["decision_id"] for row in due])))
        return plans

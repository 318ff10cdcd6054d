"""Consent that ends: when a decision's ``expires_at`` passes, the purposes it set turn denied.

A decision with ``expires_at`` that won purposes is scheduled in ``expiries`` in the same
transaction that records it. A worker chore claims due rows by their index (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so each expiry is applied by one worker), and in ONE transaction writes a
ledger entry of source ``expiry`` denying the purposes that decision still holds, queues the
pushes, and deletes the rows. A purpose a newer decision replaced is left alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.base import Adapter
from gateway.store.entries import Entry, Plan, lock_subjects, write
from gateway.store.snapshot import EPOCH, subject_state
from gateway.store.tables import expiries
from schemas.consent import PurposeState, SubjectState, merge, own_decision

log = structlog.get_logger("consent_gateway.expiry")
EXPIRY = uuid.UUID("0b6c1f0e-52d4-4f7a-9d7e-3a1c5e9f2b40")  # namespace: an expiry's entry id comes from its decision's
BATCH = 100


class Expiries:
    def __init__(
        self,
        engine: AsyncEngine,
        adapters: Mapping[str, Adapter],
        clock: Callable[[], datetime],
        wake: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.adapters = adapters
        self.clock = clock
        self.wake = wake

    async def step(self) -> bool:
        """Apply up to BATCH due expiries; whether any was due."""
        now = self.clock()
        async with self.engine.begin() as conn:
            claim = (
                select(expiries)
                .where(expiries.c.due_at <= now)
                .order_by(expiries.c.due_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            due = (await conn.execute(claim)).mappings().all()
            if not due:
                return False
            locked = await lock_subjects(conn, [row["subject_id"] for row in due], now)
            plans = self._plans(due, locked)
            if plans:
                await write(conn, plans, now)
            await conn.execute(delete(expiries).where(expiries.c.decision_id.in_([row["decision_id"] for row in due])))
        for plan in plans:
            log.info("consent_expired", subject=plan.after.subject_id, purposes=plan.entry.effective)
        self.wake()
        return True

    def _plans(self, due: Sequence[Mapping[Any, Any]], locked: Mapping[str, Any]) -> list[Plan]:
        states: dict[str, SubjectState] = {}
        holders: dict[str, dict[str, str]] = {}  # subject -> purpose -> the decision its granted/pending state is from
        for sid, (row, purposes) in locked.items():
            if row["occurred_at"] != EPOCH and row["erased_at"] is None:
                states[sid] = subject_state(row, purposes)
                holders[sid] = {p["purpose"]: p["decision_id"] for p in purposes if p["state"] != "denied"}
        plans = []
        for row in due:
            sid, source = row["subject_id"], row["decision_id"]
            ending = sorted(purpose for purpose, held_by in holders.get(sid, {}).items() if held_by == source)
            if not ending:
                continue
            denied = dict.fromkeys(ending, PurposeState.denied)
            decision = own_decision(sid, denied, row["due_at"], "expiry", f"consent of decision {source} expired")
            after, effective = merge(states[sid], decision)
            entry_id = str(uuid.uuid5(EXPIRY, source))
            plans.append(
                Plan.of(
                    Entry(entry_id, decision, effective, dict.fromkeys(effective, entry_id)),
                    states[sid],
                    after,
                    self.adapters,
                )
            )
            states[sid] = after
            for purpose in effective:
                holders[sid].pop(purpose, None)
        return plans

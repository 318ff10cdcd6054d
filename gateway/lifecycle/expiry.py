"""Consent that ends: when a decision's ``expires_at`` passes, the purposes it set turn denied.

A worker chore has the store apply due expiries (``gateway.store.expiries``): for each, a ledger
entry of source ``expiry`` denying the purposes that decision still holds, with its pushes, in the
transaction that removes the expiry. A purpose a newer decision replaced is left alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from adapters.base import Adapter
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.store.entries import Entry, Plan
from gateway.store.snapshot import EPOCH, subject_state
from schemas.consent import PurposeState, SubjectState, merge, own_decision

log = structlog.get_logger("consent_gateway.expiry")
EXPIRY = uuid.UUID("0b6c1f0e-52d4-4f7a-9d7e-3a1c5e9f2b40")  # namespace: an expiry's entry id comes from its decision's
BATCH = 100


class Expiries:
    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        clock: Callable[[], datetime],
        wake: Callable[[], None],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.clock = clock
        self.wake = wake
        self.metrics = metrics

    async def step(self) -> bool:
        """Apply up to BATCH due expiries; whether any was due."""
        plans = await self.store.expiries.apply_due(self.clock(), BATCH, self._plans)
        if plans is None:
            return False
        for plan in plans:
            log.info("consent_expired", subject=plan.after.subject_id, purposes=plan.entry.effective)
            self.metrics.expired.inc(len(plan.entry.effective))
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

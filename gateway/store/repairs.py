"""Repairing subjects that hold a future-dated decision.

Before ``occurred_at`` was bounded by the gateway's clock, a decision dated in the future
could be recorded, and it wins every later decision for its purposes: a person's opt-out
would lose forever. Nothing is fixed silently: ``consent-gateway subjects future-dated``
lists such subjects, and ``--repair`` re-dates each decision that claims to have happened
after the gateway received it to its receive time, folds the subject's ledger again in
receive order, and writes the result with a ledger entry of source ``repair`` naming what
changed. Providers then get the subject's repaired state like after any decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from adapters.base import Adapter
from gateway.rules.redating import refold
from gateway.store.ids import new_id
from gateway.store.ledger import Entry, Ledger
from gateway.store.tables import decisions, subject_purposes
from schemas.api import DecisionOut
from schemas.consent import Decision, own_decision


@dataclass(frozen=True)
class FutureDated:
    """A purpose whose winning record claims a time beyond the gateway's clock."""

    subject_id: str
    purpose: str
    occurred_at: datetime
    decision_id: str


class FutureDates:
    """The subjects holding a decision dated beyond the gateway's clock, and their repair."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def find(self, now: datetime, skew: timedelta) -> list[FutureDated]:
        table = subject_purposes
        query = select(table.c.subject_id, table.c.purpose, table.c.occurred_at, table.c.decision_id).where(
            table.c.occurred_at > now + skew
        )
        async with self.ledger.reader.connect() as conn:
            rows = await conn.execute(query.order_by(table.c.subject_id, table.c.purpose))
            return [FutureDated(*row) for row in rows]

    async def repair(
        self, subject_id: str, adapters: Mapping[str, Adapter], now: datetime, skew: timedelta
    ) -> DecisionOut | None:
        """Re-date and re-fold one subject, atomically; the repair entry, or None if nothing changed."""
        ledger = self.ledger
        async with ledger.engine.begin() as conn:
            before = await ledger.locked_state(conn, subject_id)
            rows = await conn.execute(
                select(decisions.c.id, decisions.c.body, decisions.c.received_at)
                .where(decisions.c.subject_id == subject_id)
                .order_by(decisions.c.seq)
            )
            entries = [(row.id, Decision.model_validate(row.body, strict=False), row.received_at) for row in rows]
            if before is None or not entries:
                return None
            after, winners = refold(entries, skew)
            changed = sorted(
                purpose for purpose, record in after.purposes.items() if before.purposes.get(purpose) != record
            )
            if not changed:
                return None
            redated = sorted({before.purposes[p].occurred_at.isoformat() for p in changed if p in before.purposes})
            note = f"re-dated future-dated decisions ({', '.join(redated)}) to when the gateway received them"
            redone = {purpose: after.purposes[purpose].state for purpose in changed}
            decision = own_decision(subject_id, redone, now, "repair", note)
            entry = Entry(new_id(), decision, changed, winners)
            return await ledger.append(conn, entry, before, after, adapters, now)

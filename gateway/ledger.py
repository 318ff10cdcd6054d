"""Decisions in: the append-only ledger, the merged subject state and the outbox rows.

A decision is recorded with its ledger row, the merged state and its deliveries in ONE
transaction, under a lock on the subject row, so concurrent decisions for one subject
merge one at a time and none is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.base import Adapter, Projection
from gateway.db import insert, reader, upsert
from gateway.idempotency import Binding
from gateway.outbox import OPEN, delivery_out
from gateway.snapshot import EPOCH, subject_state
from gateway.tables import decisions, deliveries, delivery_decisions, provider_state, subject_purposes, subjects
from schemas.api import DecisionOut, DeliveryOut, DeliveryStatus
from schemas.consent import Decision, SubjectState, merge

SUBJECT_FIELDS = {"email", "phone", "tcf_string", "vendors", "expires_at", "source", "note", "occurred_at"}


@dataclass(frozen=True)
class Entry:
    """A ledger row about to be written: the decision, the purposes it set, and for every
    purpose whose stored record it rewrites, the decision that record comes from.

    ``held``: providers known to hold a projection already (the provider a decision was adopted
    from): where it is what they should hold, nothing is pushed back to them. ``force``:
    providers pushed again whatever they acknowledged (a repair).
    """

    id: str
    decision: Decision
    effective: list[str]
    winners: dict[str, str]
    superseded: list[str] | None = None  # default: the decision's purposes it did not set
    held: Mapping[str, Projection] = field(default_factory=dict)
    force: frozenset[str] = frozenset()


class Ledger:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def record(
        self,
        decision: Decision,
        adapters: Mapping[str, Adapter],
        now: datetime,
        binding: Binding | None = None,
        held: Mapping[str, Projection] | None = None,
    ) -> DecisionOut:
        """Ledger row, merged state and outbox rows, atomically; returns the recorded decision.

        With a ``binding`` the decision is bound to its idempotency key in the same
        transaction; if an earlier attempt already recorded one for it, that one is returned
        and nothing is written.
        """
        decision_id = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            earlier = await binding.claim(conn, decision_id) if binding else None
            if earlier is None:
                return await self._record(conn, decision_id, decision, adapters, now, held or {})
        found = await self.decision(earlier)
        assert found is not None, "a bound decision is never deleted"
        return found

    async def _record(
        self,
        conn: AsyncConnection,
        decision_id: str,
        decision: Decision,
        adapters: Mapping[str, Adapter],
        now: datetime,
        held: Mapping[str, Projection],
    ) -> DecisionOut:
        before = await self._lock_subject(conn, decision, now)
        after, effective = merge(before, decision)
        entry = Entry(decision_id, decision, effective, dict.fromkeys(effective, decision_id), held=held)
        return await self.append(conn, entry, before, after, adapters, now)

    async def repush(
        self, subject_id: str, providers: Collection[str], adapters: Mapping[str, Adapter], now: datetime, note: str
    ) -> DecisionOut | None:
        """A repair: push the subject's state to ``providers`` again, whatever they acknowledged,
        with a ledger entry (source ``repair``) saying why. None for an unknown subject."""
        async with self.engine.begin() as conn:
            state = await self.locked_state(conn, subject_id)
            if state is None:
                return None
            decision = Decision.model_validate(
                {
                    "subject": {"id": subject_id},
                    "purposes": {purpose: record.state for purpose, record in state.purposes.items()},
                    "occurred_at": now,
                    "source": "repair",
                    "note": note,
                },
                strict=False,
            )
            entry = Entry(str(uuid.uuid4()), decision, [], {}, superseded=[], force=frozenset(providers))
            return await self.append(conn, entry, state, state, adapters, now)

    async def append(
        self,
        conn: AsyncConnection,
        entry: Entry,
        before: SubjectState | None,
        after: SubjectState,
        adapters: Mapping[str, Adapter],
        now: datetime,
    ) -> DecisionOut:
        """Write one ledger entry and what it did: the subject's new state and an outbox row
        for each provider whose projection it changed. The subject must be locked."""
        decision = entry.decision
        row: dict[str, Any] = {
            "id": entry.id,
            "subject_id": decision.subject.id,
            "occurred_at": decision.occurred_at,
            "received_at": now,
            "body": decision.model_dump(mode="json"),
            "effective": entry.effective,
            "superseded": sorted(set(decision.purposes) - set(entry.effective))
            if entry.superseded is None
            else entry.superseded,
        }
        await conn.execute(decisions.insert().values(row))
        await self._write_state(conn, after, entry.winners, now)
        changed = (  # a repair changes no state: only the providers it pushes again get a delivery
            dict.fromkeys(entry.force, True)
            if entry.force
            else {
                name: (adapter.project(before) if before else {}) != adapter.project(after)
                for name, adapter in adapters.items()
            }
        )
        for name, projection in entry.held.items():
            if adapters[name].project(after) == projection:
                changed[name] = False
                await self._acknowledge(conn, after.subject_id, name, projection, now)
        if entry.force:  # what they hold is unknown: the push sends everything
            forced = provider_state.c.provider.in_(sorted(entry.force))
            await conn.execute(
                update(provider_state)
                .where(provider_state.c.subject_id == after.subject_id, forced)
                .values(acknowledged={})
            )
        carried = await self._enqueue(conn, entry.id, decision.subject.id, changed, now)
        return _decision_out(row, carried)

    @staticmethod
    async def _acknowledge(
        conn: AsyncConnection, subject_id: str, provider: str, projection: Projection, now: datetime
    ) -> None:
        """The provider holds ``projection`` already (read back): no push needs to bring it there."""
        values = {"acknowledged": projection, "acknowledged_at": now}
        statement = insert(conn, provider_state).values(subject_id=subject_id, provider=provider, memo={}, **values)
        await conn.execute(statement.on_conflict_do_update(index_elements=["subject_id", "provider"], set_=values))

    async def _lock_subject(self, conn: AsyncConnection, decision: Decision, now: datetime) -> SubjectState | None:
        """Create the subject row if new, then lock it and read its state, so concurrent
        decisions for one subject merge one at a time."""
        row = {
            "id": decision.subject.id,
            "vendors": {},
            "source": decision.source,
            "occurred_at": EPOCH,
            "updated_at": now,
        }
        await conn.execute(insert(conn, subjects).values(row).on_conflict_do_nothing(index_elements=["id"]))
        return await self._state(conn, decision.subject.id, lock=True)

    async def _write_state(
        self, conn: AsyncConnection, state: SubjectState, winners: Mapping[str, str], now: datetime
    ) -> None:
        """The subject's fields, and the purposes in ``winners`` (purpose → the decision that set it)."""
        purposes = [
            {
                "subject_id": state.subject_id,
                "purpose": purpose,
                "state": state.purposes[purpose].state.value,
                "occurred_at": state.purposes[purpose].occurred_at,
                "decision_id": decision_id,
            }
            for purpose, decision_id in winners.items()
        ]
        await upsert(conn, subject_purposes, purposes, ["subject_id", "purpose"])
        fields = state.model_dump(include=SUBJECT_FIELDS) | {"updated_at": now}
        await conn.execute(update(subjects).where(subjects.c.id == state.subject_id).values(fields))

    async def _enqueue(
        self, conn: AsyncConnection, decision_id: str, subject_id: str, changed: dict[str, bool], now: datetime
    ) -> list[DeliveryOut]:
        """Coalesce: join each changed provider's delivery that has not been sent yet, else queue
        a new one (``skipped`` where nothing changed); returns the deliveries this decision rides on.

        The open rows are locked, so a worker claiming one meanwhile either waits for this
        decision or is waited for (and then this decision gets a delivery of its own).
        """
        open_rows = await conn.execute(
            select(deliveries.c.provider, deliveries.c.id)
            .where(
                deliveries.c.subject_id == subject_id,
                deliveries.c.provider.in_([name for name, yes in changed.items() if yes]),
                deliveries.c.status.in_([s.value for s in OPEN]),
            )
            .with_for_update()
        )
        joined = dict(open_rows.all())
        new_rows = [
            {
                "id": str(uuid.uuid4()),
                "decision_id": decision_id,
                "subject_id": subject_id,
                "provider": name,
                "status": (DeliveryStatus.pending if yes else DeliveryStatus.skipped).value,
                "attempts": 0,
                "reschedules": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for name, yes in changed.items()
            if name not in joined
        ]
        if new_rows:
            await conn.execute(deliveries.insert(), new_rows)
        ids = [*joined.values(), *(row["id"] for row in new_rows)]
        if not ids:
            return []
        await conn.execute(
            delivery_decisions.insert(), [{"delivery_id": id_, "decision_id": decision_id} for id_ in ids]
        )
        found = await conn.execute(select(deliveries).where(deliveries.c.id.in_(ids)).order_by(deliveries.c.provider))
        return [delivery_out(row) for row in found.mappings()]

    # -- reading -------------------------------------------------------------------------

    async def subject_state(self, subject_id: str) -> SubjectState | None:
        async with self.reader.connect() as conn:
            return await self._state(conn, subject_id)

    async def locked_state(self, conn: AsyncConnection, subject_id: str) -> SubjectState | None:
        """The subject's state, its row locked until ``conn``'s transaction ends."""
        return await self._state(conn, subject_id, lock=True)

    async def _state(self, conn: AsyncConnection, subject_id: str, lock: bool = False) -> SubjectState | None:
        query = select(subjects).where(subjects.c.id == subject_id)
        row = (await conn.execute(query.with_for_update() if lock else query)).mappings().first()
        if row is None or row["occurred_at"] == EPOCH:
            return None
        purposes = (
            await conn.execute(select(subject_purposes).where(subject_purposes.c.subject_id == subject_id))
        ).mappings()
        return subject_state(row, purposes)

    async def decision(self, decision_id: str) -> DecisionOut | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(select(decisions).where(decisions.c.id == decision_id))).mappings().first()
            if row is None:
                return None
            carried = await conn.execute(
                select(deliveries)
                .join(delivery_decisions, delivery_decisions.c.delivery_id == deliveries.c.id)
                .where(delivery_decisions.c.decision_id == decision_id)
                .order_by(deliveries.c.provider)
            )
            return _decision_out(row, [delivery_out(d) for d in carried.mappings()])

    async def history(self, subject_id: str, limit: int) -> list[DecisionOut]:
        """The subject's ledger, newest received first."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(
                select(decisions)
                .where(decisions.c.subject_id == subject_id)
                .order_by(decisions.c.seq.desc())
                .limit(limit)
            )
            found = [row for row in rows.mappings()]
        return [decision for row in found if (decision := await self.decision(row["id"])) is not None]

    async def decision_statuses(self, decision_id: str) -> list[DeliveryStatus]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(
                select(deliveries.c.status)
                .join(delivery_decisions, delivery_decisions.c.delivery_id == deliveries.c.id)
                .where(delivery_decisions.c.decision_id == decision_id)
            )
            return [DeliveryStatus(row[0]) for row in rows]


def _decision_out(row: Mapping[str, Any] | RowMapping, carried: list[DeliveryOut]) -> DecisionOut:
    return DecisionOut(
        id=row["id"],
        subject_id=row["subject_id"],
        received_at=row["received_at"],
        decision=Decision.model_validate(row["body"], strict=False),
        effective_purposes=row["effective"],
        superseded_purposes=row["superseded"],
        deliveries=carried,
    )

"""Decisions in: the append-only ledger, the merged subject state and the outbox rows.

Decisions are recorded in groups (``record_many``; one decision is a group of one): each
group is ONE transaction that locks its subjects, merges every decision in arrival order,
and writes ledger rows, merged states and deliveries with one statement per kind of row
(``gateway.entries``). Concurrent decisions for one subject merge one at a time; none is lost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.base import Adapter, Projection
from adapters.errors import GatewayError
from gateway.store.db import Executor, read, reader, transaction
from gateway.store.entries import Entry, Plan, decision_out, lock_subjects, write
from gateway.store.idempotency import Binding, claim_bindings
from gateway.store.ids import new_id
from gateway.store.outbox import delivery_out
from gateway.store.snapshot import DECIDED, EPOCH, read_states, subject_state
from gateway.store.tables import decisions, deliveries, delivery_decisions, erasures, subjects
from schemas.api import DecisionOut, DeliveryOut, DeliveryStatus
from schemas.consent import Decision, SubjectState, merge, own_decision

__all__ = ["Entry", "Ledger", "Pending", "SubjectErased"]


@dataclass(frozen=True)
class Pending:
    """A decision waiting to be recorded, with its idempotency binding, and the projections
    providers are known to hold already (a decision adopted from one of them)."""

    decision: Decision
    binding: Binding | None = None
    held: Mapping[str, Projection] = field(default_factory=dict)


class SubjectErased(GatewayError):
    """A decision for an erased subject: refused (a 409), so erased data never comes back by accident."""

    def __init__(self, subject_id: str, advice: str) -> None:
        super().__init__(f"subject {subject_id} was erased; {advice}")
        self.subject_id = subject_id


def repair(state: SubjectState, providers: Collection[str], now: datetime, note: str) -> Entry:
    """The ledger entry (source ``repair``) that pushes the subject's state to ``providers`` again,
    whatever they acknowledged, changing nothing."""
    held = {purpose: record.state for purpose, record in state.purposes.items()}
    decision = own_decision(state.subject_id, held, now, "repair", note)
    return Entry(new_id(), decision, [], {}, superseded=[], force=frozenset(providers))


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
        [recorded] = await self.record_many([Pending(decision, binding, held or {})], adapters, now)
        return recorded

    async def record_many(
        self, items: Sequence[Pending], adapters: Mapping[str, Adapter], now: datetime
    ) -> list[DecisionOut]:
        """Ledger rows, merged states and outbox rows of ``items``, atomically, merged in order.

        A decision bound to an idempotency key that an earlier attempt already recorded is not
        recorded again: the earlier one is returned in its place.
        """
        proposed = [new_id() for _ in items]

        async def group(conn: Executor) -> tuple[dict[int, str], dict[int, DecisionOut]]:
            return await self._record_group(conn, items, proposed, adapters, now)

        earlier, written = await transaction(self.engine, group)
        for index, decision_id in earlier.items():
            found = await self.decision(decision_id)
            assert found is not None, "a bound decision is never deleted"
            written[index] = found
        return [written[index] for index in range(len(items))]

    async def _record_group(
        self,
        conn: Executor,
        items: Sequence[Pending],
        proposed: Sequence[str],
        adapters: Mapping[str, Adapter],
        now: datetime,
    ) -> tuple[dict[int, str], dict[int, DecisionOut]]:
        """The group's transaction: the ids an earlier attempt bound (by item), and what this one wrote."""
        stored = await claim_bindings(conn, [(item.binding, id_) for item, id_ in zip(items, proposed, strict=True)])
        earlier = {index: found for index, found in enumerate(stored) if found not in (None, proposed[index])}
        fresh = [index for index in range(len(items)) if index not in earlier]
        locked = await lock_subjects(conn, [items[index].decision.subject.id for index in fresh], now)
        states: dict[str, SubjectState | None] = {
            sid: None if row["occurred_at"] == EPOCH else subject_state(row, purposes)
            for sid, (row, purposes) in locked.items()
        }
        plans = []
        for index in fresh:
            decision = items[index].decision
            before = await self._unless_erased(conn, states[decision.subject.id], decision)
            after, effective = merge(before, decision)
            states[decision.subject.id] = after
            entry = Entry(proposed[index], decision, effective, dict.fromkeys(effective, proposed[index]))
            plans.append(Plan.of(entry, before, after, adapters, items[index].held))
        written = dict(zip(fresh, await write(conn, plans, now), strict=True)) if plans else {}
        return earlier, written

    async def _unless_erased(
        self, conn: Executor, state: SubjectState | None, decision: Decision
    ) -> SubjectState | None:
        """The state a decision merges into; SubjectErased for an erased subject unless the decision
        re-creates it (and the erasure is finished: its removals and scrub must not meet new data)."""
        if state is None or state.erased_at is None:
            return state
        if not decision.recreate:
            raise SubjectErased(state.subject_id, 'send "recreate": true to record a decision for it again')
        pending = select(erasures.c.id).where(erasures.c.subject_id == state.subject_id, erasures.c.status == "pending")
        if (await conn.execute(pending)).first() is not None:
            raise SubjectErased(state.subject_id, "its erasure is still under way: try again once it is done")
        return state.model_copy(update={"erased_at": None})

    async def append(
        self,
        conn: AsyncConnection,
        entry: Entry,
        before: SubjectState | None,
        after: SubjectState,
        adapters: Mapping[str, Adapter],
        now: datetime,
    ) -> DecisionOut:
        """Write one entry whose state the caller worked out (a repair); the subject must be locked."""
        [written] = await write(conn, [Plan.of(entry, before, after, adapters)], now)
        return written

    async def repush(
        self, subject_id: str, providers: Collection[str], adapters: Mapping[str, Adapter], now: datetime, note: str
    ) -> DecisionOut | None:
        """A repair: push the subject's state to ``providers`` again, whatever they acknowledged,
        with a ledger entry (source ``repair``) saying why. None for an unknown subject."""
        async with self.engine.begin() as conn:
            state = await self.locked_state(conn, subject_id)
            if state is None:
                return None
            if state.erased_at is not None:
                raise SubjectErased(subject_id, "nothing is pushed for it any more but its removal")
            return await self.append(conn, repair(state, providers, now, note), state, state, adapters, now)

    # -- reading -------------------------------------------------------------------------

    async def subject_state(self, subject_id: str, *, addressed: bool = True) -> SubjectState | None:
        """``addressed``: with who else holds its addresses and the ones it left (for a provider keeping
        one consent per address); a push to any other provider needs neither."""
        return (await self.subject_states([subject_id], addressed=addressed)).get(subject_id)

    async def subject_states(self, ids: Sequence[str], *, addressed: bool = True) -> dict[str, SubjectState]:
        """``subject_state`` of several subjects in one read (a claimed group of deliveries): those decided."""

        async def states(conn: Executor) -> dict[str, SubjectState]:
            return await read_states(conn, ids, DECIDED, addressed=addressed, former=True)

        return await read(self.engine, states)

    async def locked_state(self, conn: AsyncConnection, subject_id: str) -> SubjectState | None:
        """The subject's state, its row locked until ``conn``'s transaction ends."""
        await conn.execute(select(subjects.c.id).where(subjects.c.id == subject_id).with_for_update())
        return (await read_states(conn, [subject_id], DECIDED, former=True)).get(subject_id)

    async def decision(self, decision_id: str) -> DecisionOut | None:
        found = await self._decisions(decisions.c.id == decision_id, limit=1)
        return found[0] if found else None

    async def decisions(self, ids: Sequence[str]) -> list[DecisionOut]:
        return await self._decisions(decisions.c.id.in_(list(ids)), len(ids)) if ids else []

    async def history(self, subject_id: str, limit: int) -> list[DecisionOut]:
        """The subject's ledger, newest received first: two queries, however long it is."""
        return await self._decisions(decisions.c.subject_id == subject_id, limit)

    async def _decisions(self, where: ColumnElement[bool], limit: int) -> list[DecisionOut]:
        """Decisions (newest received first) and every delivery each rides on, in two queries."""
        async with self.reader.connect() as conn:
            query = select(decisions).where(where).order_by(decisions.c.seq.desc()).limit(limit)
            rows = (await conn.execute(query)).mappings().all()
            carried: dict[str, list[DeliveryOut]] = {row["id"]: [] for row in rows}
            if rows:
                found = await conn.execute(
                    select(deliveries, delivery_decisions.c.decision_id.label("carried_for"))
                    .join(delivery_decisions, delivery_decisions.c.delivery_id == deliveries.c.id)
                    .where(delivery_decisions.c.decision_id.in_(list(carried)))
                    .order_by(deliveries.c.provider, deliveries.c.created_at, deliveries.c.id)
                )
                for delivery in found.mappings():
                    carried[delivery["carried_for"]].append(delivery_out(delivery))
        return [decision_out(row, carried[row["id"]]) for row in rows]

    async def decision_statuses(self, decision_id: str) -> list[DeliveryStatus]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(
                select(deliveries.c.status)
                .join(delivery_decisions, delivery_decisions.c.delivery_id == deliveries.c.id)
                .where(delivery_decisions.c.decision_id == decision_id)
            )
            return [DeliveryStatus(row[0]) for row in rows]

"""Erasure's store work: an erasure recorded with its removals, and the person's data scrubbed.

``request`` writes, in ONE transaction, a ledger entry of source ``erasure`` (every purpose
denied, dated so it wins), marks the subject erased (a tombstone: later decisions are refused
unless they re-create it), queues a removal at every provider and audits who asked. The worker
pushes an erased subject with each adapter's ``erase`` flow (Wix deletes its consents; Masivo
and Intempt get every purpose denied), with the usual retries, dead letters and replay. Once
every removal succeeded, a worker chore scrubs the person's data from the store: contact data,
notes and TCF strings from the subject and from every ledger body and from delivery errors,
read-back observations, what providers acknowledged and the index of the addresses the person
had. Stored idempotent answers hold only decision ids (a replay reads the scrubbed ledger).
The ledger keeps its non-identifying history: ids, times, purposes and sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, bindparam, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.base import Adapter
from gateway.redaction import mask_contacts, mask_values
from gateway.store import addresses
from gateway.store.db import flush_to_disk
from gateway.store.entries import Entry
from gateway.store.ids import new_id
from gateway.store.ledger import Ledger
from gateway.store.outbox import delivery_out
from gateway.store.tables import (
    decisions,
    deliveries,
    delivery_attempts,
    delivery_decisions,
    erasures,
    observations,
    provider_state,
    subjects,
)
from schemas.api import DeliveryStatus, ErasureOut, ErasureStatus
from schemas.consent import PurposeState, SubjectState, merge, own_decision

REMOVED = frozenset({DeliveryStatus.succeeded, DeliveryStatus.skipped})


class ErasureRecords:
    def __init__(self, engine: AsyncEngine, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger

    async def request(
        self,
        subject_id: str,
        requested_by: str,
        adapters: Mapping[str, Adapter],
        purposes: Sequence[str],
        now: datetime,
    ) -> tuple[ErasureOut, bool] | None:
        """The subject's erasure, and whether this call started it (an erased subject answers its
        latest erasure again); None for a subject never recorded."""
        async with self.engine.begin() as conn:
            state = await self.ledger.locked_state(conn, subject_id)
            if state is None:
                return None
            if state.erased_at is not None:
                latest = select(erasures.c.id).where(erasures.c.subject_id == subject_id)
                found = (await conn.execute(latest.order_by(erasures.c.requested_at.desc()))).scalars().first()
                existing = None if found is None else await self._out(conn, found)
                if existing is not None:
                    return existing, False
            erasure_id = await self._start(conn, state, requested_by, adapters, purposes, now)
        started = await self.get(erasure_id)
        assert started is not None
        return started, True

    async def _start(
        self,
        conn: AsyncConnection,
        state: SubjectState,
        requested_by: str,
        adapters: Mapping[str, Adapter],
        purposes: Sequence[str],
        now: datetime,
    ) -> str:
        dated = max([now, state.occurred_at, *(record.occurred_at for record in state.purposes.values())])
        everything = dict.fromkeys(purposes, PurposeState.denied)
        decision = own_decision(state.subject_id, everything, dated, "erasure", f"erasure requested by {requested_by}")
        after, effective = merge(state, decision)
        entry_id = new_id()
        entry = Entry(entry_id, decision, effective, dict.fromkeys(effective, entry_id), force=frozenset(adapters))
        await self.ledger.append(conn, entry, state, after.model_copy(update={"erased_at": now}), adapters, now)
        erasure_id = new_id()
        row = {"id": erasure_id, "subject_id": state.subject_id, "decision_id": entry_id, "requested_by": requested_by}
        await conn.execute(erasures.insert(), [row | {"status": ErasureStatus.pending.value, "requested_at": now}])
        return erasure_id

    async def get(self, erasure_id: str) -> ErasureOut | None:
        async with self.engine.connect() as conn:
            return await self._out(conn, erasure_id)

    async def _out(self, conn: AsyncConnection, erasure_id: str) -> ErasureOut | None:
        row = (await conn.execute(select(erasures).where(erasures.c.id == erasure_id))).mappings().first()
        if row is None:
            return None
        removals = await conn.execute(
            select(deliveries)
            .join(delivery_decisions, delivery_decisions.c.delivery_id == deliveries.c.id)
            .where(delivery_decisions.c.decision_id == row["decision_id"])
            .order_by(deliveries.c.provider)
        )
        fields = {key: row[key] for key in ("id", "subject_id", "requested_by", "requested_at", "completed_at")}
        return ErasureOut(
            **fields, status=ErasureStatus(row["status"]), deliveries=[delivery_out(r) for r in removals.mappings()]
        )

    async def finish_next(self, now: datetime) -> tuple[str, str] | None:
        """Finish the oldest erasure whose removals all succeeded: scrub the store. Its id and
        subject, or None. One with a removal still open or dead is not even read (it waits for its
        replay)."""
        unfinished = (
            select(delivery_decisions.c.delivery_id)
            .join(deliveries, deliveries.c.id == delivery_decisions.c.delivery_id)
            .where(
                delivery_decisions.c.decision_id == erasures.c.decision_id,
                deliveries.c.status.not_in([status.value for status in REMOVED]),
            )
        )
        ready = (
            select(erasures.c.id, erasures.c.subject_id)
            .where(erasures.c.status == ErasureStatus.pending.value, ~exists(unfinished))
            .order_by(erasures.c.requested_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        async with self.engine.begin() as conn:
            found = (await conn.execute(ready)).first()
            if found is None:
                return None
            await scrub(conn, found.subject_id)
            done = {"status": ErasureStatus.done.value, "completed_at": now}
            await conn.execute(update(erasures).where(erasures.c.id == found.id).values(done))
        return found.id, found.subject_id

    async def flush(self) -> bool:
        """What a scrub overwrote, off the disk too (SQLite's log); False while a reader holds the log."""
        return await flush_to_disk(self.engine)


async def scrub(conn: AsyncConnection, subject_id: str) -> None:
    """The person's data out of every table; ids, times, purposes and sources stay."""
    ledger = decisions.c.subject_id == subject_id
    bodies = (await conn.execute(select(decisions.c.body).where(ledger))).scalars().all()
    private = {text for body in bodies for text in _private(body)}
    personal: dict[str, Any] = {"email": None, "phone": None, "note": None, "tcf_string": None, "vendors": {}}
    await conn.execute(update(subjects).where(subjects.c.id == subject_id).values(personal))
    await _rewrite(conn, decisions.c.id, decisions.c.body, ledger, _scrubbed)

    def masked(text: str) -> str:  # "invalid email …", or a provider echoing the note the push carried
        return mask_contacts(mask_values(text, private))

    theirs = deliveries.c.subject_id == subject_id
    await _rewrite(conn, deliveries.c.id, deliveries.c.last_error, theirs, masked)
    attempts = delivery_attempts.c.delivery_id.in_(select(deliveries.c.id).where(theirs))
    await _rewrite(conn, delivery_attempts.c.id, delivery_attempts.c.error, attempts, masked)
    await conn.execute(delete(observations).where(observations.c.subject_id == subject_id))
    held = update(provider_state).where(provider_state.c.subject_id == subject_id)  # Wix's hold addresses
    await conn.execute(held.values(acknowledged={}, memo={}, writes={}))
    await addresses.forget(conn, subject_id)  # current and former: their consents were removed


async def _rewrite(
    conn: AsyncConnection,
    key: Column[Any],
    column: Column[Any],
    where: ColumnElement[bool],
    change: Callable[[Any], Any],
) -> None:
    """``column`` := ``change(column)`` in the rows ``where`` selects (that hold a value)."""
    found = (await conn.execute(select(key, column).where(where))).all()
    changed = [{"_key": k, "_value": change(value)} for k, value in found if value]
    if changed:
        statement = update(column.table).where(key == bindparam("_key")).values({column.name: bindparam("_value")})
        await conn.execute(statement, changed)


def _scrubbed(body: dict[str, Any]) -> dict[str, Any]:
    return body | {"subject": {"id": body["subject"]["id"]}, "note": None, "tcf_string": None, "vendors": None}


def _private(body: dict[str, Any]) -> list[str]:
    subject = body["subject"]
    return [
        text for text in (body.get("note"), body.get("tcf_string"), subject.get("email"), subject.get("phone")) if text
    ]

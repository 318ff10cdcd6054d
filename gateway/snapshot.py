"""Everything the drift view needs about a chunk of subjects, read in a handful of queries:
their merged states, what each provider acknowledged and was last observed to hold, and each
provider's newest real delivery. Pages of subjects are walked in id order (keyset), so a view
over millions of subjects keeps memory flat.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import reader
from gateway.drift import Known
from gateway.outbox import delivery_out
from gateway.tables import deliveries, observations, provider_state, subject_purposes, subjects
from schemas.api import DeliveryOut, DeliveryStatus
from schemas.consent import PurposeRecord, PurposeState, SubjectState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the occurred_at of a subject row created but never decided
Pair = tuple[str, str]  # (subject id, provider)


@dataclass(frozen=True)
class Chunk:
    """A chunk of subjects as the drift view sees them."""

    states: dict[str, SubjectState]
    known: dict[Pair, Known]
    observe_errors: dict[Pair, str]
    deliveries: dict[Pair, DeliveryOut]


def subject_state(row: Mapping[Any, Any], purposes: Iterable[Mapping[Any, Any]]) -> SubjectState:
    """A subject row and its purpose rows as the merged state adapters translate."""
    return SubjectState(
        subject_id=row["id"],
        email=row["email"],
        phone=row["phone"],
        purposes={
            p["purpose"]: PurposeRecord(state=PurposeState(p["state"]), occurred_at=p["occurred_at"]) for p in purposes
        },
        vendors=row["vendors"],
        tcf_string=row["tcf_string"],
        expires_at=row["expires_at"],
        source=row["source"],
        note=row["note"],
        occurred_at=row["occurred_at"],
    )


class Snapshots:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = reader(engine)

    async def subject_ids(self, after: str | None, limit: int) -> list[str]:
        """The next ``limit`` subject ids with a decision, in id order, after ``after``."""
        query = select(subjects.c.id).where(subjects.c.occurred_at != EPOCH).order_by(subjects.c.id).limit(limit)
        if after is not None:
            query = query.where(subjects.c.id > after)
        async with self.engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def count(self) -> int:
        """How many subjects have a decision."""
        query = select(func.count()).select_from(subjects).where(subjects.c.occurred_at != EPOCH)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def states(self, ids: Sequence[str]) -> dict[str, SubjectState]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(subjects).where(subjects.c.id.in_(ids)))).mappings().all()
            purposes = await conn.execute(select(subject_purposes).where(subject_purposes.c.subject_id.in_(ids)))
            by_subject: dict[str, list[Mapping[Any, Any]]] = defaultdict(list)
            for purpose in purposes.mappings():
                by_subject[purpose["subject_id"]].append(purpose)
        return {row["id"]: subject_state(row, by_subject[row["id"]]) for row in rows if row["occurred_at"] != EPOCH}

    async def chunk(self, ids: Sequence[str]) -> Chunk:
        """States, acknowledgements, observations and newest real deliveries of ``ids``."""
        states = await self.states(ids)
        async with self.engine.connect() as conn:
            acks = (await conn.execute(select(provider_state).where(provider_state.c.subject_id.in_(ids)))).mappings()
            seen = (await conn.execute(select(observations).where(observations.c.subject_id.in_(ids)))).mappings()
            known: dict[Pair, Known] = {}
            for ack in acks:
                known[(ack["subject_id"], ack["provider"])] = Known(ack["acknowledged"], ack["acknowledged_at"])
            errors: dict[Pair, str] = {}
            for row in seen:
                pair = (row["subject_id"], row["provider"])
                found = known.get(pair, Known())
                if row["held"] is not None:
                    known[pair] = Known(found.acknowledged, found.acknowledged_at, row["held"], row["observed_at"])
                if row["error"]:
                    errors[pair] = row["error"]
            return Chunk(states, known, errors, await self._last_deliveries(conn, ids))

    @staticmethod
    async def _last_deliveries(conn: Any, ids: Sequence[str]) -> dict[Pair, DeliveryOut]:
        """The newest delivery per subject × provider that meant to push, picked by the database:
        a ``skipped`` one (nothing to send) never hides a dead push."""
        newest_first = (deliveries.c.created_at.desc(), deliveries.c.id.desc())
        pair = (deliveries.c.subject_id, deliveries.c.provider)
        nth = func.row_number().over(partition_by=pair, order_by=newest_first).label("nth")
        pushes = deliveries.c.subject_id.in_(ids) & (deliveries.c.status != DeliveryStatus.skipped.value)
        ranked = select(deliveries, nth).where(pushes).subquery()
        columns = [ranked.c[name] for name in deliveries.c.keys()]
        rows = await conn.execute(select(*columns).where(ranked.c.nth == 1))
        return {(row["subject_id"], row["provider"]): delivery_out(row) for row in rows.mappings()}

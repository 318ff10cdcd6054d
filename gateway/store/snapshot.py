"""Everything the drift view needs about a chunk of subjects, read in a handful of queries:
their merged states, what each provider acknowledged and was last observed to hold, and each
provider's newest real delivery. Pages of subjects are walked in id order (keyset), so a view
over millions of subjects keeps memory flat.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.rules.drift import Known
from gateway.rules.provenance import Provenance
from gateway.store import addresses
from gateway.store.db import Executor, reader
from gateway.store.outbox import delivery_out
from gateway.store.tables import deliveries, observations, provider_state, subject_purposes, subjects
from schemas.api import UNDER_WAY, DeliveryOut, DeliveryStatus
from schemas.consent import PurposeRecord, PurposeState, SubjectState, parse_timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the occurred_at of a subject row created but never decided
DECIDED = subjects.c.occurred_at != EPOCH  # erased ones too: their removal is still pushed
LIVE = DECIDED & subjects.c.erased_at.is_(None)  # decided, and not erased
Pair = tuple[str, str]  # (subject id, provider)
STATES = {state.value: state for state in PurposeState}  # a dict lookup: several per subject in a drift view


@dataclass(frozen=True)
class Chunk:
    """A chunk of subjects as the drift view sees them."""

    states: dict[str, SubjectState]
    known: dict[Pair, Known]
    observe_errors: dict[Pair, str]
    under_way: frozenset[Pair]  # a delivery is pending, retrying or sending
    dead: frozenset[Pair]  # the newest delivery that meant to push died

    def delivery_status(self, pair: Pair) -> DeliveryStatus | None:
        """What a row's status needs of its deliveries (the rest of a last delivery only matters
        for rows that are shown: ``Snapshots.last_deliveries``)."""
        if pair in self.under_way:
            return DeliveryStatus.pending
        return DeliveryStatus.dead if pair in self.dead else None


def subject_state(row: Mapping[Any, Any], purposes: Iterable[Mapping[Any, Any]]) -> SubjectState:
    """A subject row and its purpose rows as the merged state adapters translate. Built without
    validation: the rows were validated on the way in, and a drift view builds one per subject."""
    return SubjectState.model_construct(
        subject_id=row["id"],
        email=row["email"],
        phone=row["phone"],
        purposes={
            p["purpose"]: PurposeRecord.model_construct(state=STATES[p["state"]], occurred_at=p["occurred_at"])
            for p in purposes
        },
        vendors=row["vendors"],
        tcf_string=row["tcf_string"],
        expires_at=row["expires_at"],
        source=row["source"],
        note=row["note"],
        occurred_at=row["occurred_at"],
        erased_at=row["erased_at"],
        **ALONE,
    )


ALONE: dict[str, Any] = {"shared": {}, "former": {}, "address_since": {}}
"""Given, not defaulted: pydantic inspects a default factory's signature on every model_construct."""


async def read_states(
    conn: Executor, ids: Sequence[str], which: ColumnElement[bool], *, addressed: bool = True, former: bool = False
) -> dict[str, SubjectState]:
    """The states of the subjects among ``ids`` that match ``which``, in three statements whatever
    their number; ``addressed``: with who else holds their addresses (and, with ``former``, the
    addresses they left) for a provider keeping one consent per address."""
    rows = (await conn.execute(select(subjects).where(subjects.c.id.in_(ids), which))).mappings().all()
    purposes = await conn.execute(select(subject_purposes).where(subject_purposes.c.subject_id.in_(ids)))
    by_subject: dict[str, list[Mapping[Any, Any]]] = defaultdict(list)
    for purpose in purposes.mappings():
        by_subject[purpose["subject_id"]].append(purpose)
    found = [subject_state(row, by_subject[row["id"]]) for row in rows]
    if addressed:
        found = await addresses.attach(conn, found, former=former)
    return {state.subject_id: state for state in found}


class Snapshots:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = reader(engine)

    async def subject_ids(self, after: str | None, limit: int) -> list[str]:
        """The next ``limit`` subject ids with a decision (erased ones are not reconciled), in id order."""
        query = select(subjects.c.id).where(LIVE).order_by(subjects.c.id).limit(limit)
        if after is not None:
            query = query.where(subjects.c.id > after)
        async with self.engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def count(self) -> int:
        """How many subjects have a decision and are not erased."""
        query = select(func.count()).select_from(subjects).where(LIVE)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def states(self, ids: Sequence[str]) -> dict[str, SubjectState]:
        """Live subjects' states, with the other subjects sharing their addresses."""
        async with self.engine.connect() as conn:
            return await read_states(conn, ids, LIVE)

    async def chunk(self, ids: Sequence[str]) -> Chunk:
        """States, acknowledgements, observations, and which pairs have a push under way or dead."""
        states = await self.states(ids)
        async with self.engine.connect() as conn:
            ack_names = ("subject_id", "provider", "acknowledged", "acknowledged_at", "writes")
            ack_columns = [provider_state.c[name] for name in ack_names]
            acks = (await conn.execute(select(*ack_columns).where(provider_state.c.subject_id.in_(ids)))).mappings()
            seen_names = ("subject_id", "provider", "held", "changed_at", "observed_at", "error")
            seen_columns = [observations.c[name] for name in seen_names]
            seen = (await conn.execute(select(*seen_columns).where(observations.c.subject_id.in_(ids)))).mappings()
            known: dict[Pair, Known] = {}
            for ack in acks:
                writes = Provenance.from_json(ack["writes"])
                known[(ack["subject_id"], ack["provider"])] = Known(
                    ack["acknowledged"], ack["acknowledged_at"], writes=writes
                )
            errors: dict[Pair, str] = {}
            for row in seen:
                pair = (row["subject_id"], row["provider"])
                if row["held"] is not None:
                    changed_at = {term: parse_timestamp(moment) for term, moment in (row["changed_at"] or {}).items()}
                    update = {"observed": row["held"], "observed_at": row["observed_at"], "changed_at": changed_at}
                    known[pair] = replace(known.get(pair, Known()), **update)
                if row["error"]:
                    errors[pair] = row["error"]
            under_way, dead = await self._attention(conn, ids)
            return Chunk(states, known, errors, under_way, dead)

    async def _attention(self, conn: Any, ids: Sequence[str]) -> tuple[frozenset[Pair], frozenset[Pair]]:
        """Pairs with a delivery under way, and pairs whose newest real delivery is dead. Only
        open and dead rows are read (a handful), and the newest-delivery check runs only for
        pairs that have a dead one."""
        worth = [status.value for status in (*UNDER_WAY, DeliveryStatus.dead)]
        query = select(deliveries.c.subject_id, deliveries.c.provider, deliveries.c.status).where(
            deliveries.c.subject_id.in_(ids), deliveries.c.status.in_(worth)
        )
        found = (await conn.execute(query)).all()
        under_way = frozenset((subject, provider) for subject, provider, status in found if status != "dead")
        suspects = {(subject, provider) for subject, provider, status in found if status == "dead"} - under_way
        if not suspects:
            return under_way, frozenset()
        newest = await self._newest(conn, sorted({subject for subject, _ in suspects}))
        return under_way, frozenset(p for p in suspects if newest[p]["status"] == DeliveryStatus.dead.value)

    async def last_deliveries(self, ids: Sequence[str]) -> dict[Pair, DeliveryOut]:
        """The newest delivery per subject × provider that meant to push (a ``skipped`` one, with
        nothing to send, never hides a dead push): for the rows that are shown."""
        async with self.engine.connect() as conn:
            return {pair: delivery_out(row) for pair, row in (await self._newest(conn, ids)).items()}

    @staticmethod
    async def _newest(conn: Any, ids: Sequence[str]) -> dict[Pair, RowMapping]:
        newest_first = (deliveries.c.created_at.desc(), deliveries.c.id.desc())
        pair = (deliveries.c.subject_id, deliveries.c.provider)
        nth = func.row_number().over(partition_by=pair, order_by=newest_first).label("nth")
        pushes = deliveries.c.subject_id.in_(ids) & (deliveries.c.status != DeliveryStatus.skipped.value)
        ranked = select(deliveries, nth).where(pushes).subquery()
        columns = [ranked.c[name] for name in deliveries.c.keys()]
        rows = await conn.execute(select(*columns).where(ranked.c.nth == 1))
        return {(row["subject_id"], row["provider"]): row for row in rows.mappings()}

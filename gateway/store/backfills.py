"""Backfills in the store: a provider sent every live subject's state again, as a job claimed under a
lease like a read-back run, remembering the last subject it enqueued, so a driver that stopped (the
CLI interrupted, a worker gone) is taken over and resumes after it.

Each chunk of subjects is ONE transaction: what the provider was known to hold is forgotten (so each
push is a first sync, sent whole), a ``repair`` ledger entry and a delivery are written per subject
that maps something there (``entries.write``: a handful of statements per chunk), the delivery each
subject rides on is kept (the receipt), and the cursor moves past the chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.base import Adapter
from adapters.errors import GatewayError
from gateway.store import addresses
from gateway.store.db import insert, reader
from gateway.store.entries import Plan, lock_subjects, write
from gateway.store.ids import new_id
from gateway.store.ledger import repair
from gateway.store.snapshot import EPOCH, subject_state
from gateway.store.tables import UNFINISHED, UTCDateTime, backfill_items, backfills, deliveries, provider_state
from schemas.api import FAILURES_SHOWN, UNDER_WAY, BackfillFailure, BackfillOut, RunStatus
from schemas.consent import SubjectState

OUTSTANDING = deliveries.c.status.in_([status.value for status in UNDER_WAY])


@dataclass(frozen=True)
class Leased:
    """A backfill a driver holds the lease of: what it needs to go on."""

    id: str
    provider: str
    cursor: str | None  # the last subject id enqueued


class LeaseLost(GatewayError):
    """Another driver took the backfill over (this one's lease ran out): this chunk was not enqueued."""


class Backfills:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def ask(self, provider: str, subjects: int, now: datetime) -> tuple[BackfillOut, bool]:
        """Queue a backfill of ``provider`` (``subjects``: how many it is about to push), or join the
        one not finished yet (False): at most one per provider is queued or running."""
        row: dict[str, Any] = {
            "id": new_id(),
            "provider": provider,
            "status": RunStatus.queued.value,
            "counts": {"subjects": subjects, "enqueued": 0, "nothing": 0},
            "created_at": now,
        }
        async with self.engine.begin() as conn:
            unfinished = backfills.c.status.in_(UNFINISHED)
            statement = insert(conn, backfills).values(row)
            added = await conn.execute(
                statement.on_conflict_do_nothing(index_elements=["provider"], index_where=unfinished)
            )
            found = row["id"] if added.rowcount else await _unfinished(conn, provider)
        backfill = await self.get(found)
        assert backfill is not None, "a backfill is never deleted"
        return backfill, bool(added.rowcount)

    async def get(self, backfill_id: str) -> BackfillOut | None:
        """The backfill with its receipt: per outcome how many subjects, and the failed ones with why."""
        async with self.reader.connect() as conn:
            row = (await conn.execute(select(backfills).where(backfills.c.id == backfill_id))).mappings().first()
            if row is None:
                return None
            joined = backfill_items.join(deliveries, deliveries.c.id == backfill_items.c.delivery_id)
            mine = backfill_items.c.backfill_id == backfill_id
            tally = select(deliveries.c.status, func.count()).select_from(joined).where(mine)
            outcomes = {status: int(count) for status, count in await conn.execute(tally.group_by(deliveries.c.status))}
            died = (
                select(
                    backfill_items.c.subject_id, deliveries.c.id, deliveries.c.last_error, deliveries.c.last_status_code
                )
                .select_from(joined)
                .where(mine, deliveries.c.status == "dead")
                .order_by(backfill_items.c.subject_id)
                .limit(FAILURES_SHOWN)
            )
            failures = [
                BackfillFailure(subject_id=s, delivery_id=d, error=e, status_code=c)
                for s, d, e, c in await conn.execute(died)
            ]
        counts = row["counts"]
        return BackfillOut(
            id=row["id"],
            provider=row["provider"],
            status=RunStatus(row["status"]),
            subjects=counts["subjects"],
            enqueued=counts["enqueued"],
            outcomes=outcomes | ({"nothing": counts["nothing"]} if counts["nothing"] else {}),
            failures=failures,
            cursor=row["cursor"],
            error=row["error"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    async def claim(
        self, owner: str, providers: Sequence[str], now: datetime, lease_s: float, backfill_id: str | None = None
    ) -> list[Leased]:
        """Lease every backfill of ``providers`` (or only ``backfill_id``) that is queued, whose driver
        stopped renewing its lease, or that ``owner`` holds already (a driver advances it step by step).
        At most one per provider is unfinished: they are few."""
        table = backfills
        claimable = or_(
            table.c.status == RunStatus.queued.value,
            (table.c.status == RunStatus.running.value)
            & ((table.c.lease_until <= now) | (table.c.lease_owner == owner)),
        )
        pick = select(table.c.id, table.c.provider, table.c.cursor).where(
            claimable, table.c.provider.in_(list(providers))
        )
        if backfill_id is not None:
            pick = pick.where(table.c.id == backfill_id)
        async with self.engine.begin() as conn:
            query = pick.order_by(table.c.created_at).with_for_update(skip_locked=True)
            picked = [Leased(*row) for row in await conn.execute(query)]
            if picked:
                await conn.execute(
                    update(table)
                    .where(table.c.id.in_([backfill.id for backfill in picked]))
                    .values(
                        status=RunStatus.running.value,
                        started_at=func.coalesce(table.c.started_at, literal(now, UTCDateTime())),
                        lease_until=now + timedelta(seconds=lease_s),
                        lease_owner=owner,
                    )
                )
        return picked

    async def outstanding(self, backfill_id: str) -> int:
        """The backfill's deliveries not final yet (pending, retrying or sending)."""
        query = (
            select(func.count())
            .select_from(backfill_items.join(deliveries, deliveries.c.id == backfill_items.c.delivery_id))
            .where(backfill_items.c.backfill_id == backfill_id, OUTSTANDING)
        )
        async with self.reader.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def enqueue(
        self,
        backfill: Leased,
        owner: str,
        subject_ids: Sequence[str],
        adapters: Mapping[str, Adapter],
        now: datetime,
        lease_s: float,
    ) -> int:
        """One chunk, in one transaction, under ``owner``'s lease (else ``LeaseLost``, nothing written):
        a push of every subject that maps something at the provider, as a first sync; the cursor moves
        past the chunk. Erased subjects are passed over. Returns how many pushes were queued."""
        provider = backfill.provider
        async with self.engine.begin() as conn:
            renewed = await conn.execute(
                update(backfills)
                .where(backfills.c.id == backfill.id, backfills.c.lease_owner == owner, backfills.c.lease_until > now)
                .values(lease_until=now + timedelta(seconds=lease_s))
            )
            if not renewed.rowcount:
                raise LeaseLost(f"backfill {backfill.id} is driven by another process now")
            states = await _live_states(conn, subject_ids, now)
            adapter = adapters[provider]
            pushed = [state for state in states if adapter.project(state)]
            note = f"backfill {backfill.id}: {provider} is sent everything again, as if it held nothing"
            plans = [Plan.of(repair(state, [provider], now, note), state, state, adapters) for state in pushed]
            if plans:
                await conn.execute(
                    update(provider_state)
                    .where(provider_state.c.provider == provider)
                    .where(provider_state.c.subject_id.in_([state.subject_id for state in pushed]))
                    .values(acknowledged={}, memo={})
                )
                written = await write(conn, plans, now)
                items = [
                    {"backfill_id": backfill.id, "subject_id": entry.subject_id, "delivery_id": entry.deliveries[0].id}
                    for entry in written
                ]
                await conn.execute(backfill_items.insert(), items)
            counts = await _counts(conn, backfill.id)
            counts["enqueued"] += len(pushed)
            counts["nothing"] += len(states) - len(pushed)
            await conn.execute(
                update(backfills).where(backfills.c.id == backfill.id).values(cursor=subject_ids[-1], counts=counts)
            )
        return len(pushed)

    async def finish(self, backfill_id: str, status: RunStatus, now: datetime, error: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(backfills)
                .where(backfills.c.id == backfill_id)
                .values(status=status.value, finished_at=now, lease_until=None, lease_owner=None, error=error)
            )

    async def release(self, backfill_id: str, owner: str, now: datetime) -> None:
        """Give the lease up now (a driver stopping): the next driver resumes at once, not after the lease."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(backfills)
                .where(backfills.c.id == backfill_id, backfills.c.lease_owner == owner)
                .values(lease_until=now)
            )


async def _unfinished(conn: AsyncConnection, provider: str) -> str:
    query = select(backfills.c.id).where(backfills.c.provider == provider, backfills.c.status.in_(UNFINISHED))
    return str((await conn.execute(query)).scalar_one())


async def _counts(conn: AsyncConnection, backfill_id: str) -> dict[str, Any]:
    query = select(backfills.c.counts).where(backfills.c.id == backfill_id)
    return dict((await conn.execute(query)).scalar_one())


async def _live_states(conn: AsyncConnection, subject_ids: Sequence[str], now: datetime) -> list[SubjectState]:
    """The subjects' states (with who shares their addresses), locked until the transaction ends; erased
    ones (since the chunk was picked) left out."""
    locked = await lock_subjects(conn, subject_ids, now)
    states = [
        subject_state(row, purposes)
        for row, purposes in locked.values()
        if row["occurred_at"] != EPOCH and row["erased_at"] is None
    ]
    return await addresses.attach(conn, states, former=True)

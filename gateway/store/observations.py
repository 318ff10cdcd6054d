"""Read-back in the store: what each provider was last found to hold, and reconciliation runs.

A run is claimed under a lease like a delivery, and remembers the last subject it finished, so
a run whose worker died is taken over by another worker and resumed where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.base import Observation
from gateway.store import stale
from gateway.store.db import insert, reader, upsert
from gateway.store.ids import new_id
from gateway.store.tables import UTCDateTime, observations, reconciliation_runs
from schemas.api import RunOut, RunStatus

Read = Observation | str  # what a read-back found for a row, or why it failed


class Observations:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def save(self, run_id: str | None, found: Mapping[tuple[str, str], Read], now: datetime) -> None:
        """Store what each row was found to hold; a failed read keeps the last one and says why."""
        held = [
            {
                "subject_id": subject_id,
                "provider": provider,
                "held": result.held,
                "changed_at": {term: moment.isoformat() for term, moment in result.changed_at.items()},
                "observed_at": now,
                "run_id": run_id,
                "error": None,
                "error_at": None,
            }
            for (subject_id, provider), result in found.items()
            if isinstance(result, Observation)
        ]
        failed = {pair: result for pair, result in found.items() if isinstance(result, str)}
        async with self.engine.begin() as conn:
            await stale.mark(conn, [subject_id for subject_id, _ in found])
            await upsert(conn, observations, held, ["subject_id", "provider"])
            for (subject_id, provider), error in failed.items():
                statement = insert(conn, observations).values(
                    subject_id=subject_id, provider=provider, run_id=run_id, error=error, error_at=now
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["subject_id", "provider"], set_={"error": error, "error_at": now}
                    )
                )

    async def get(self, subject_id: str, provider: str) -> Observation | None:
        """The last successful read of one row, or None if it was never read."""
        query = select(observations).where(observations.c.subject_id == subject_id, observations.c.provider == provider)
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None or row["held"] is None:
            return None
        return Observation(held=row["held"], changed_at=row["changed_at"])


def _queued(
    run_id: str, providers: list[str], subjects: list[str] | None, now: datetime, *, scheduled: bool
) -> dict[str, Any]:
    return {
        "id": run_id,
        "status": RunStatus.queued.value,
        "providers": providers,
        "subjects": subjects,
        "scheduled": int(scheduled),
        "counts": {"subjects": 0},
        "created_at": now,
    }


class Runs:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def create(
        self,
        providers: list[str],
        subjects: list[str] | None,
        now: datetime,
        *,
        run_id: str | None = None,
        scheduled: bool = False,
    ) -> RunOut | None:
        """Queue a run; None when ``run_id`` exists already (a schedule slot another worker took)."""
        row = _queued(run_id or new_id(), providers, subjects, now, scheduled=scheduled)
        async with self.engine.begin() as conn:
            added = await conn.execute(insert(conn, reconciliation_runs).values(row).on_conflict_do_nothing())
        return run_out(row) if added.rowcount else None

    async def ask(
        self, providers: list[str], subjects: list[str] | None, now: datetime, max_queued: int
    ) -> tuple[RunOut | None, bool]:
        """A run a person asks for: the one already queued asking the same (and False), a new one
        (and True), or None while ``max_queued`` runs people asked for still wait."""
        table = reconciliation_runs
        waiting = select(table).where(table.c.status == RunStatus.queued.value, table.c.scheduled == 0)
        async with self.engine.begin() as conn:
            queued = (await conn.execute(waiting.with_for_update())).mappings().all()
            same = next((r for r in queued if r["providers"] == providers and r["subjects"] == subjects), None)
            if same is not None or len(queued) >= max_queued:
                return (run_out(same) if same else None), False
            row = _queued(new_id(), providers, subjects, now, scheduled=False)
            await conn.execute(insert(conn, table).values(row))
        return run_out(row), True

    async def get(self, run_id: str) -> RunOut | None:
        async with self.reader.connect() as conn:
            query = select(reconciliation_runs).where(reconciliation_runs.c.id == run_id)
            row = (await conn.execute(query)).mappings().first()
        return run_out(row) if row else None

    async def recent(self, limit: int) -> list[RunOut]:
        """The newest runs first (the admin page's list)."""
        table = reconciliation_runs
        async with self.reader.connect() as conn:
            query = select(table).order_by(table.c.created_at.desc(), table.c.id).limit(limit)
            return [run_out(row) for row in (await conn.execute(query)).mappings()]

    async def cursor(self, run_id: str) -> str | None:
        async with self.reader.connect() as conn:
            query = select(reconciliation_runs.c.cursor).where(reconciliation_runs.c.id == run_id)
            return (await conn.execute(query)).scalar_one_or_none()

    async def claim(self, now: datetime, lease_s: float, run_id: str | None = None) -> RunOut | None:
        """Lease the oldest queued run (or ``run_id``), or a running one whose worker stopped renewing it."""
        table = reconciliation_runs
        claimable = or_(
            table.c.status == RunStatus.queued.value,
            (table.c.status == RunStatus.running.value) & (table.c.lease_until <= now),
        )
        pick = select(table.c.id).where(claimable).order_by(table.c.created_at).limit(1)
        if run_id is not None:
            pick = pick.where(table.c.id == run_id)
        async with self.engine.begin() as conn:
            picked = (await conn.execute(pick.with_for_update(skip_locked=True))).scalar_one_or_none()
            if picked is None:
                return None
            row = (
                (
                    await conn.execute(
                        update(table)
                        .where(table.c.id == picked)
                        .values(
                            status=RunStatus.running.value,
                            started_at=func.coalesce(table.c.started_at, literal(now, UTCDateTime())),
                            lease_until=now + timedelta(seconds=lease_s),
                        )
                        .returning(*table.c)
                    )
                )
                .mappings()
                .one()
            )
        return run_out(row)

    async def progress(
        self, run_id: str, cursor: str | None, counts: dict[str, Any], now: datetime, lease_s: float
    ) -> None:
        """Record a finished chunk (and renew the lease): a resumed run starts after ``cursor``."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(reconciliation_runs)
                .where(reconciliation_runs.c.id == run_id)
                .values(cursor=cursor, counts=counts, lease_until=now + timedelta(seconds=lease_s))
            )

    async def finish(self, run_id: str, status: RunStatus, now: datetime, error: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(reconciliation_runs)
                .where(reconciliation_runs.c.id == run_id)
                .values(status=status.value, finished_at=now, lease_until=None, error=error)
            )


def run_out(row: Mapping[Any, Any]) -> RunOut:
    return RunOut(
        id=row["id"],
        status=RunStatus(row["status"]),
        providers=row["providers"],
        subjects=row["subjects"],
        scheduled=bool(row["scheduled"]),
        counts=row["counts"],
        error=row.get("error"),
        created_at=row["created_at"],
        started_at=row.get("started_at"),
        finished_at=row.get("finished_at"),
    )

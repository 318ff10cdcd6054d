"""The drift view's rows, materialized (table ``reconciliation_rows``): per subject × provider the
status, and the marks of subjects whose rows' inputs changed since (``gateway.store.stale``).

A subject without a mark has rows computed after its inputs last changed: the view reads them as
they are. A marked subject's rows may be out of date: the view computes them live instead. A
refresher (``gateway.reconcile.rows``) reads a subject's marks, then its inputs, computes its rows
and, in one transaction, deletes exactly the marks it read and stores the rows. A mark written
after the refresher read the marks stays, so a change it missed leaves the subject marked. Stores
are serialized (an advisory lock on PostgreSQL; SQLite has one writer) and a refresher that deleted
none of its marks (another one did, having read the inputs later) stores nothing: an older
computation never overwrites a newer one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.db import reader, upsert
from gateway.store.snapshot import LIVE, Pair
from gateway.store.tables import reconciliation_providers, reconciliation_rows, reconciliation_stale, subjects

ROWS = reconciliation_rows
STALE = reconciliation_stale
PROVIDERS = reconciliation_providers
Stored = tuple[str, str, str]  # (subject id, provider, status)
STORING = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/reconciliation_rows'))"


class DriftRows:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    # -- keeping them up to date ---------------------------------------------------------

    async def settle_providers(self, fingerprints: Mapping[str, str]) -> list[str]:
        """Providers configured anew, or whose settings changed since their rows were computed: every
        live subject is marked (their rows are computed again) and the new settings remembered, in one
        transaction; rows of providers no longer configured are dropped. Returns the ones changed."""
        async with self.reader.connect() as conn:  # the usual case, read only: nothing changed
            if await _fingerprints(conn) == dict(fingerprints):
                return []
        async with self.engine.begin() as conn:
            stored = await _fingerprints(conn, lock=True)
            changed = sorted(name for name, print_ in fingerprints.items() if stored.get(name) != print_)
            gone = sorted(set(stored) - set(fingerprints))
            if changed:
                live = select(subjects.c.id).where(LIVE)
                await conn.execute(STALE.insert().from_select(["subject_id"], live))
                rows = [{"provider": name, "fingerprint": fingerprints[name]} for name in changed]
                await upsert(conn, PROVIDERS, rows, ["provider"])
            if gone:
                await conn.execute(delete(ROWS).where(ROWS.c.provider.in_(gone)))
                await conn.execute(delete(PROVIDERS).where(PROVIDERS.c.provider.in_(gone)))
            return changed

    async def stale(self, limit: int) -> list[str]:
        """Up to ``limit`` marked subjects, in id order."""
        query = select(STALE.c.subject_id).distinct().order_by(STALE.c.subject_id).limit(limit)
        async with self.reader.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def marks(self, subject_ids: Sequence[str]) -> list[tuple[int, str]]:
        """Every mark these subjects hold now, with its subject (read before their inputs are)."""
        query = select(STALE.c.id, STALE.c.subject_id).where(STALE.c.subject_id.in_(subject_ids))
        async with self.reader.connect() as conn:
            return [(row[0], row[1]) for row in await conn.execute(query)]

    async def store(self, marks: Sequence[int], rows: Mapping[str, Sequence[Mapping[str, Any]]], now: datetime) -> int:
        """Delete ``marks`` and, for each subject one of them was still there for, replace its rows with
        ``rows[subject]`` (none: a subject no longer live). Returns how many subjects were stored."""
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text(STORING))
            cleared = await conn.execute(delete(STALE).where(STALE.c.id.in_(marks)).returning(STALE.c.subject_id))
            fresh = sorted({row[0] for row in cleared} & rows.keys())
            if fresh:
                await conn.execute(delete(ROWS).where(ROWS.c.subject_id.in_(fresh)))
                written = [dict(row) | {"refreshed_at": now} for subject in fresh for row in rows[subject]]
                if written:
                    await conn.execute(ROWS.insert(), written)
            return len(fresh)

    # -- reading them --------------------------------------------------------------------

    async def counts(self, providers: Collection[str], unless: Collection[str]) -> Counter[tuple[str, str]]:
        """Rows per (provider, status) of ``providers``, leaving out the subjects ``unless``."""
        query = (
            select(ROWS.c.provider, ROWS.c.status, func.count())
            .where(ROWS.c.provider.in_(sorted(providers)), ROWS.c.subject_id.not_in(sorted(unless)))
            .group_by(ROWS.c.provider, ROWS.c.status)
        )
        async with self.reader.connect() as conn:
            return Counter({(provider, status): int(n) for provider, status, n in await conn.execute(query)})

    async def page(
        self,
        providers: Collection[str],
        statuses: Collection[str] | None,
        after: Pair | None,
        limit: int,
        unless: Collection[str],
    ) -> list[Stored]:
        """Up to ``limit`` rows after ``after``, in subject then provider order, leaving out ``unless``."""
        query = (
            select(ROWS.c.subject_id, ROWS.c.provider, ROWS.c.status)
            .where(ROWS.c.provider.in_(sorted(providers)), ROWS.c.subject_id.not_in(sorted(unless)))
            .order_by(ROWS.c.subject_id, ROWS.c.provider)
            .limit(limit)
        )
        if statuses is not None:
            query = query.where(ROWS.c.status.in_(sorted(statuses)))
        if after is not None:
            subject, provider = after
            query = query.where(
                or_(ROWS.c.subject_id > subject, and_(ROWS.c.subject_id == subject, ROWS.c.provider > provider))
            )
        async with self.reader.connect() as conn:
            return [(row[0], row[1], row[2]) for row in await conn.execute(query)]

    async def of(self, subject_ids: Sequence[str]) -> dict[Pair, dict[str, Any]]:
        """The stored rows of these subjects, by pair (for the check)."""
        columns = [ROWS.c.subject_id, ROWS.c.provider, ROWS.c.status, ROWS.c.acknowledged_at, ROWS.c.observed_at]
        async with self.reader.connect() as conn:
            found = (await conn.execute(select(*columns).where(ROWS.c.subject_id.in_(subject_ids)))).mappings()
            return {(row["subject_id"], row["provider"]): dict(row) for row in found}

    async def orphans(self, limit: int) -> list[Pair]:
        """Stored rows of subjects that are not live (erased, or never decided): none should be."""
        live = select(subjects.c.id).where(LIVE, subjects.c.id == ROWS.c.subject_id)
        query = select(ROWS.c.subject_id, ROWS.c.provider).where(~live.exists()).limit(limit)
        async with self.reader.connect() as conn:
            return [(row[0], row[1]) for row in await conn.execute(query)]


async def _fingerprints(conn: AsyncConnection, *, lock: bool = False) -> dict[str, str]:
    query = select(PROVIDERS.c.provider, PROVIDERS.c.fingerprint)
    return {name: print_ for name, print_ in await conn.execute(query.with_for_update() if lock else query)}

"""Idempotency keys: a retried POST with the same key gets the original answer.

Same key + same body → the original response; same key + a different body → 409; the
same key while the first request is still running → 409. Keys are per client (token
name) and kept for ``ttl_s`` (at least 24 h). A key whose first request died before
answering is taken over once it is ``stale_s`` old, so a crash never blocks a key forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import insert
from gateway.tables import idempotency_keys


class Verdict(StrEnum):
    proceed = "proceed"  # this request now owns the key
    replay = "replay"  # answer with the stored response
    mismatch = "mismatch"  # the key was used with another body
    in_progress = "in_progress"  # the first request with this key has not answered yet


@dataclass(frozen=True)
class Lookup:
    verdict: Verdict
    status: int | None = None
    body: Any = None


class IdempotencyKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def begin(
        self, scope: str, key: str, request_hash: str, now: datetime, ttl_s: float, stale_s: float
    ) -> Lookup:
        table = idempotency_keys
        match = (table.c.scope == scope) & (table.c.key == key)
        async with self.engine.begin() as conn:
            await conn.execute(delete(table).where(table.c.expires_at < now))
            row = (await conn.execute(select(table).where(match).with_for_update())).mappings().first()
            if row is None:
                inserted = await conn.execute(
                    insert(conn, table)
                    .values(
                        scope=scope,
                        key=key,
                        request_hash=request_hash,
                        created_at=now,
                        expires_at=now + timedelta(seconds=ttl_s),
                    )
                    .on_conflict_do_nothing(index_elements=["scope", "key"])
                )
                return Lookup(Verdict.proceed if inserted.rowcount else Verdict.in_progress)
            if row["request_hash"] != request_hash:
                return Lookup(Verdict.mismatch)
            if row["response_status"] is not None:
                return Lookup(Verdict.replay, row["response_status"], row["response_body"])
            if row["created_at"] > now - timedelta(seconds=stale_s):
                return Lookup(Verdict.in_progress)
            await conn.execute(update(table).where(match).values(created_at=now))
            return Lookup(Verdict.proceed)

    async def complete(self, scope: str, key: str, status: int, body: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(idempotency_keys)
                .where((idempotency_keys.c.scope == scope) & (idempotency_keys.c.key == key))
                .values(response_status=status, response_body=body)
            )

    async def release(self, scope: str, key: str) -> None:
        """Forget a key whose request failed before doing anything, so a retry can use it."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(idempotency_keys).where((idempotency_keys.c.scope == scope) & (idempotency_keys.c.key == key))
            )

"""Idempotency keys: a retried POST with the same key gets the original answer.

Same key + same body → the original response; same key + a different body → 409; the
same key while the first request is still running → 409. Keys are per client (token
name) and kept for ``ttl_s`` (at least 24 h). A key whose first request died before
answering is taken over once it is ``stale_s`` old, so a crash never blocks a key forever.

The decision each item of a keyed request records is bound to the key in the SAME
transaction that records it (``idempotent_decisions``), so whatever happens afterwards — a
crash, a cancelled request, a failed wait — a retry answers that decision and never
records a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.db import Executor, insert, insert_new
from gateway.store.tables import idempotency_keys, idempotent_decisions

if TYPE_CHECKING:  # the ledger binds keys as it records: it imports this module
    from gateway.store.ledger import Ledger

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)
"""``created_at`` of a key whose request failed after recording: a retry takes it over at once."""


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
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Binding:
    """Ties the decision recorded for item ``item`` of a keyed request to its key."""

    scope: str
    key: str
    item: int
    expires_at: datetime


async def claim_bindings(conn: Executor, proposed: Sequence[tuple[Binding | None, str]]) -> list[str | None]:
    """Inside the recording transaction, bind each proposed decision id to its key and item; per
    item, the decision id the binding now holds: the proposed one, or the decision an earlier
    attempt of the request already recorded (then that item records nothing). None: unbound."""
    bound = sorted({binding: decision_id for binding, decision_id in proposed if binding}.items(), key=_binding_key)
    if not bound:
        return [None] * len(proposed)
    table = idempotent_decisions
    rows = [
        {"scope": b.scope, "key": b.key, "item": b.item, "expires_at": b.expires_at, "decision_id": decision_id}
        for b, decision_id in bound
    ]
    await conn.execute(insert_new(conn, table, ["scope", "key", "item"]), rows)
    keys = {_binding_key((b, "")) for b, _ in bound}
    query = select(table.c.scope, table.c.key, table.c.item, table.c.decision_id).where(  # the primary key's prefix
        table.c.scope.in_(sorted({scope for scope, _, _ in keys})), table.c.key.in_(sorted({key for _, key, _ in keys}))
    )
    found = await conn.execute(query)
    held = {(scope, key, item): decision_id for scope, key, item, decision_id in found if (scope, key, item) in keys}
    return [held[_binding_key((b, ""))] if b else None for b, _ in proposed]


def _binding_key(pair: tuple[Binding, str]) -> tuple[str, str, int]:
    return pair[0].scope, pair[0].key, pair[0].item


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
            await conn.execute(delete(idempotent_decisions).where(idempotent_decisions.c.expires_at < now))
            row = (await conn.execute(select(table).where(match).with_for_update())).mappings().first()
            if row is None:
                expires_at = now + timedelta(seconds=ttl_s)
                inserted = await conn.execute(
                    insert(conn, table)
                    .values(scope=scope, key=key, request_hash=request_hash, created_at=now, expires_at=expires_at)
                    .on_conflict_do_nothing(index_elements=["scope", "key"])
                )
                if not inserted.rowcount:
                    return Lookup(Verdict.in_progress)
                return Lookup(Verdict.proceed, expires_at=expires_at)
            if row["request_hash"] != request_hash:
                return Lookup(Verdict.mismatch)
            if row["response_status"] is not None:
                return Lookup(Verdict.replay, row["response_status"], row["response_body"])
            if row["created_at"] > now - timedelta(seconds=stale_s):
                return Lookup(Verdict.in_progress)
            await conn.execute(update(table).where(match).values(created_at=now))
            return Lookup(Verdict.proceed, expires_at=row["expires_at"])

    async def complete(self, scope: str, key: str, status: int, body: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(idempotency_keys)
                .where((idempotency_keys.c.scope == scope) & (idempotency_keys.c.key == key))
                .values(response_status=status, response_body=body)
            )

    async def release(self, scope: str, key: str) -> None:
        """After a failed request: forget the key if it recorded nothing (a retry may then send
        any body); else keep it, bound to its decisions, and let a retry take it over at once."""
        keys, bound = idempotency_keys, idempotent_decisions
        match = (keys.c.scope == scope) & (keys.c.key == key)
        recorded = exists().where(bound.c.scope == scope, bound.c.key == key)
        async with self.engine.begin() as conn:
            await conn.execute(delete(keys).where(match, ~recorded))
            await conn.execute(update(keys).where(match).values(created_at=RELEASED))


def kept(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as it is stored for replays: each decision by its id (the ledger holds the rest,
    so a keyed batch of 1,000 keeps ids, not 1,000 decisions, and an erasure has nothing to find
    here: a replay reads the decisions as the ledger holds them, scrubbed once erased)."""
    if "results" not in answer:
        return {"kept": 1, "decision": answer["id"]}
    results = [r | {"decision": r["decision"]["id"]} if "decision" in r else r for r in answer["results"]]
    return {"kept": 1, "results": results}


async def rebuilt(stored: dict[str, Any], ledger: Ledger) -> dict[str, Any]:
    """A stored answer with its decisions read back from the ledger: the same decisions, each
    as it stands now (its deliveries' current statuses)."""
    single = "decision" in stored
    ids = [stored["decision"]] if single else [r["decision"] for r in stored["results"] if "decision" in r]
    found = {d.id: d.model_dump(mode="json", exclude_none=not single) for d in await ledger.decisions(ids)}
    if single:
        return found[stored["decision"]]
    return {"results": [r | {"decision": found[r["decision"]]} if "decision" in r else r for r in stored["results"]]}

"""How SQLite answers the lookups of the record path and of the worker's outcomes (``EXPLAIN QUERY
PLAN``): by the subjects' or the deliveries' own rows, so recording a decision or an outcome costs the
same with a million deliveries behind it as with none."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from gateway.store.db import create_engine
from gateway.store.entries import OPEN_DELIVERIES, open_pairs
from gateway.store.migrate import upgrade
from gateway.store.outbox import Claim, held_pairs, leased
from gateway.store.tables import deliveries, provider_state

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PAIRS = ("wix", "masivo")
BACKLOG = (  # other subjects' deliveries, due: what a provider that is down leaves waiting
    "INSERT INTO deliveries (id, decision_id, subject_id, provider, status, attempts, reschedules, next_attempt_at, "
    "created_at, updated_at) VALUES (?, 'x', ?, ?, 'pending', 0, 0, '2026-12-04 11:00:00', '2026-12-04', '2026-12-04')"
)


HELD = (  # what the providers hold for earlier subjects
    "INSERT INTO provider_state (subject_id, provider, acknowledged, memo, writes, fence, acknowledged_at)"
    " VALUES (?, ?, '{}', '{}', '{}', 0, '2026-12-04')"
)


async def plan(folder: Path, query: Any) -> str:
    """How SQLite answers ``query`` over a store of 6,000 deliveries, all due, and 6,000 pairs' states."""
    engine = create_engine(f"sqlite+aiosqlite:///{folder / 'plan.db'}")
    await upgrade(engine)
    await engine.dispose()
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(folder / "plan.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.executemany(BACKLOG, [(f"{provider}-{n}", f"b-{n}", provider) for n in range(3000) for provider in PAIRS])
        conn.executemany(HELD, [(f"b-{n}", provider) for n in range(3000) for provider in PAIRS])
        return " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


async def test_the_deliveries_a_group_can_join_are_found_by_its_subjects_not_the_backlog(tmp_path: Path) -> None:
    group = [(f"s-{n}", provider) for n in range(1000) for provider in PAIRS]  # a batch's decisions
    plan_ = await plan(tmp_path, OPEN_DELIVERIES.params(open_pairs(group, NOW)))
    assert "USING INDEX ix_deliveries_pair (subject_id=? AND provider=? AND status=?)" in plan_, plan_
    assert "ix_deliveries_due" not in plan_ and "SCAN" not in plan_, plan_


async def test_the_outcomes_of_a_group_find_their_leases_by_delivery_id(tmp_path: Path) -> None:
    claims = [Claim(f"wix-{n}", f"b-{n}", "wix", 0, f"lease-{n}") for n in range(0, 3000, 100)]
    plan_ = await plan(tmp_path, select(deliveries.c.id).where(leased(claims, NOW)))
    assert "SEARCH deliveries USING INDEX sqlite_autoindex_deliveries_1 (id=?)" in plan_, plan_
    assert "SCAN deliveries" not in plan_, plan_


async def test_what_the_providers_hold_is_found_by_subject(tmp_path: Path) -> None:
    pairs = [(provider, f"b-{n}") for n in range(0, 3000, 100) for provider in PAIRS]
    plan_ = await plan(tmp_path, select(provider_state.c.writes).where(held_pairs(pairs)))
    assert "SEARCH provider_state USING INDEX sqlite_autoindex_provider_state_1 (subject_id=?)" in plan_, plan_
    assert "SCAN provider_state" not in plan_, plan_

"""How SQLite answers the record path's lookups (``EXPLAIN QUERY PLAN``): by the subjects' own rows,
so recording a decision costs the same with a backlog of a million deliveries as with none."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.dialects import sqlite

from gateway.store.db import create_engine
from gateway.store.entries import open_deliveries
from gateway.store.migrate import upgrade

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PAIRS = ("wix", "masivo")
BACKLOG = (  # other subjects' deliveries, due: what a provider that is down leaves waiting
    "INSERT INTO deliveries (id, decision_id, subject_id, provider, status, attempts, reschedules, next_attempt_at, "
    "created_at, updated_at) VALUES (?, 'x', ?, ?, 'pending', 0, 0, '2026-12-04 11:00:00', '2026-12-04', '2026-12-04')"
)


async def test_the_deliveries_a_group_can_join_are_found_by_its_subjects_not_the_backlog(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    await upgrade(engine)
    await engine.dispose()
    group = [(f"s-{n}", provider) for n in range(1000) for provider in PAIRS]  # a batch's decisions
    query = open_deliveries(group, NOW)
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(tmp_path / "plan.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.executemany(BACKLOG, [(f"{provider}-{n}", f"b-{n}", provider) for n in range(3000) for provider in PAIRS])
        plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "USING INDEX ix_deliveries_pair (subject_id=? AND provider=? AND status=?)" in plan, plan
    assert "ix_deliveries_due" not in plan and "SCAN" not in plan, plan

"""SQLite's write transactions and small reads without aiosqlite (``gateway.store.db``): a writer
begins at once while the write lock is free, waits on a thread (the loop serving meanwhile) while
another process holds it, and a read on the loop's thread sees what was committed, never waiting."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, event, func, select, update
from sqlalchemy.engine import Engine

from gateway.store.db import Executor, SQLiteEngine, create_engine, read, transaction
from gateway.store.migrate import upgrade
from gateway.store.tables import reconciliation_stale, subjects


@pytest.fixture
async def engine(tmp_path: Path) -> SQLiteEngine:
    created = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}")
    assert isinstance(created, SQLiteEngine)
    await upgrade(created)
    return created


async def mark(conn: Executor) -> None:
    await conn.execute(reconciliation_stale.insert(), [{"subject_id": "s-1"}])


async def marks(conn: Executor) -> int:
    return int((await conn.execute(select(func.count()).select_from(reconciliation_stale))).scalar_one())


async def test_a_write_waits_for_another_processs_lock_while_the_loop_serves(engine: SQLiteEngine) -> None:
    other = sqlite3.connect(engine.sync_engine.url.database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    writing = asyncio.create_task(transaction(engine, mark))
    ticks = 0
    for _ in range(20):  # the loop keeps serving while the writer waits for the lock on a thread
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writing.done(), "it waits for the lock instead of failing"
    assert await read(engine, marks) == 0, "a read never waits for a writer"
    other.execute("COMMIT")
    await writing
    assert ticks == 20 and await read(engine, marks) == 1
    other.close()
    await engine.dispose()


async def test_a_write_with_the_lock_free_commits_and_a_read_sees_it(engine: SQLiteEngine) -> None:
    await transaction(engine, mark)
    await transaction(engine, mark)
    assert await read(engine, marks) == 2
    await engine.dispose()


async def test_a_read_awaiting_anything_but_its_statements_is_refused(engine: SQLiteEngine) -> None:
    async def strays(conn: Executor) -> int:
        await asyncio.sleep(0)  # would let other work run inside the read
        return await marks(conn)

    with pytest.raises(RuntimeError, match="awaited something other than its statements"):
        await read(engine, strays)
    await engine.dispose()


# -- executemany bound by position ----------------------------------------------------------------

NOW = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)


def subject_rows(count: int, **more: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"s-{n}", "source": "web", "occurred_at": NOW, "updated_at": NOW, "note": None, **more}
        for n in range(count)
    ]


@contextlib.contextmanager
def statements_run() -> Iterator[list[tuple[str, int, str]]]:
    """Each statement run meanwhile: its verb, its rows, and who bound them."""
    run: list[tuple[str, int, str]] = []

    def note(_conn: Any, _cursor: Any, sql: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not sql.startswith(("BEGIN", "PRAGMA")):
            binder = "sqlalchemy" if context.compiled is not None else "by position"
            run.append((sql.split()[0], len(parameters) if executemany else 1, binder))

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield run
    finally:
        event.remove(Engine, "before_cursor_execute", note)


async def stored_subjects(engine: SQLiteEngine) -> list[dict[str, Any]]:
    async def rows(conn: Executor) -> list[dict[str, Any]]:
        return [dict(row) for row in (await conn.execute(select(subjects).order_by(subjects.c.id))).mappings()]

    return await read(engine, rows)


async def test_rows_bound_by_position_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    """The writer binds a many-row statement by position; the same rows through SQLAlchemy's own
    binding (an ``AsyncConnection``) read back the same: timestamps, JSON, nulls."""
    stored = []
    for name in ("inline", "sqlalchemy"):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        assert isinstance(engine, SQLiteEngine)
        await upgrade(engine)
        rows = subject_rows(3, vendors={"7": True, "names": ["ä", None]}, expires_at=None)

        async def write(conn: Executor, rows: list[dict[str, Any]] = rows) -> None:
            await conn.execute(subjects.insert(), rows)

        if name == "inline":
            with statements_run() as run:
                await transaction(engine, write)
            assert run == [("INSERT", 3, "by position")]
        else:
            async with engine.connect() as conn:
                await write(conn)
                await conn.commit()
        stored.append(await stored_subjects(engine))
        await engine.dispose()
    assert stored[0] == stored[1]
    assert stored[0][0]["vendors"] == {"7": True, "names": ["ä", None]} and stored[0][0]["occurred_at"] == NOW


async def test_a_python_side_default_is_still_applied(engine: SQLiteEngine) -> None:
    """``vendors`` defaults to ``{}`` in Python: rows without it are bound by SQLAlchemy, not by position."""

    async def write(conn: Executor) -> None:
        await conn.execute(subjects.insert(), subject_rows(2))

    await transaction(engine, write)
    assert [row["vendors"] for row in await stored_subjects(engine)] == [{}, {}]
    await engine.dispose()


async def test_a_value_written_into_the_statement_is_never_taken_from_an_earlier_one(engine: SQLiteEngine) -> None:
    """Two statements of one shape with different values of their own: each writes its own."""

    async def write(conn: Executor) -> None:
        await conn.execute(subjects.insert(), subject_rows(4, vendors={}))
        for ids, source in ((["s-0", "s-1"], "import"), (["s-2", "s-3"], "api")):
            statement = update(subjects).where(subjects.c.id == bindparam("_id")).values(source=source)
            await conn.execute(statement, [{"_id": sid} for sid in ids])

    await transaction(engine, write)
    assert [row["source"] for row in await stored_subjects(engine)] == ["import", "import", "api", "api"]
    await engine.dispose()

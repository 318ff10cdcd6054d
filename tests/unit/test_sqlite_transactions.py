"""SQLite's write transactions and small reads without aiosqlite (``gateway.store.db``): a writer
begins at once while the write lock is free, waits on a thread (the loop serving meanwhile) while
another process holds it, and a read on the loop's thread sees what was committed, never waiting."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.store.db import Executor, SQLiteEngine, create_engine, read, transaction
from gateway.store.migrate import upgrade
from gateway.store.tables import reconciliation_stale


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

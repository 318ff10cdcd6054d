"""Shared fixtures: databases (SQLite always, PostgreSQL where reachable), a fake provider."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, inspect, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from gateway.store import Store, migrate
from gateway.store.tables import metadata
from tests.world import World, rows_disagreeing

POSTGRES_URL = os.environ.get("CONSENT_GATEWAY_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> str | None:
    """None when reachable, else the reason (shown in the skip message)."""

    async def probe() -> None:
        engine = create_async_engine(POSTGRES_URL)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(probe())
    except Exception as error:  # any failure means: not here
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(error).__name__}: {error}"
    return None


POSTGRES_SKIP = _postgres_reachable()
DROP_VERSION = "DROP TABLE IF EXISTS alembic_version"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests run against both stores, each test on an empty store at the newest revision."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if POSTGRES_SKIP:
        if os.environ.get("CONSENT_GATEWAY_REQUIRE_POSTGRES"):
            pytest.fail(POSTGRES_SKIP)
        pytest.skip(POSTGRES_SKIP)
    url = request.getfixturevalue("postgres_url")
    asyncio.run(emptied(url))
    yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the migrations made once; each test gets a copy (migrating takes longer)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "gateway.db"
    asyncio.run(upgraded(f"sqlite+aiosqlite:///{path}"))
    assert not path.with_name("gateway.db-wal").exists(), "the template is whole in its file"
    return path


async def emptied(url: str) -> None:
    """Every table emptied where the schema is the newest revision's (most tests leave it so);
    otherwise (a migration test left it behind, or another branch's tables) made again from nothing."""
    engine = create_async_engine(url)
    try:
        at = await migrate.current(engine)
        async with engine.begin() as conn:
            names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            if at == migrate.head() and names == {*metadata.tables, "alembic_version"}:
                listed = ", ".join(f'"{name}"' for name in metadata.tables)
                await conn.execute(text(f"TRUNCATE {listed} RESTART IDENTITY CASCADE"))
                return
            await conn.run_sync(drop_every_table)
            await conn.execute(text(DROP_VERSION))
    finally:
        await engine.dispose()
    await upgraded(url)


def drop_every_table(conn: Connection) -> None:
    """Every table in the schema, also ones this checkout's code does not declare (another branch's)."""
    found = MetaData()
    found.reflect(conn)
    found.drop_all(conn)


async def upgraded(url: str) -> None:
    """The schema at the newest revision, made by the migrations the package ships."""
    store = Store.from_url(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A role and schema of this test session's own inside database ``test``, so two test runs
    (or a benchmark) on one machine never drop each other's tables."""
    name = f"cg_test_{os.getpid()}_{secrets.token_hex(3)}"
    statements = [
        f'CREATE ROLE "{name}" LOGIN',
        f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"',
        f'ALTER ROLE "{name}" SET search_path = "{name}"',
    ]
    _run(POSTGRES_URL, *(lambda conn, sql=sql: conn.execute(text(sql)) for sql in statements))
    try:
        yield make_url(POSTGRES_URL).set(username=name).render_as_string(hide_password=False)
    finally:
        drop = [f'DROP SCHEMA "{name}" CASCADE', f'DROP ROLE "{name}"']
        _run(POSTGRES_URL, *(lambda conn, sql=sql: conn.execute(text(sql)) for sql in drop))


def _run(url: str, *steps: Callable[[AsyncConnection], Awaitable[Any]]) -> None:
    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                for step in steps:
                    await step(conn)
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A store; after the test, every stored drift-view row is checked against the row computed from
    scratch (``rows_disagreeing``): a write path that forgot to mark its subjects fails here."""
    store = Store.from_url(database_url)
    yield store
    try:
        if await store.current() == migrate.head():  # a migration test may leave an older schema
            disagreeing = await rows_disagreeing(store)
            ROWS_CHECKED["tests"] += 1
            ROWS_CHECKED["disagreeing"] += len(disagreeing)
            assert not disagreeing, f"stored drift rows disagree with the rows computed from scratch: {disagreeing}"
    finally:
        await store.close()


ROWS_CHECKED = {"tests": 0, "disagreeing": 0}  # this process's; the summary adds every xdist worker's


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # an xdist worker: hand the counts to the controller
        output["rows_checked"] = dict(ROWS_CHECKED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    for key, count in getattr(node, "workeroutput", {}).get("rows_checked", {}).items():
        ROWS_CHECKED[key] += count


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tests, disagreeing = ROWS_CHECKED["tests"], ROWS_CHECKED["disagreeing"]
    terminalreporter.write_line(f"drift rows checked after {tests} tests: {disagreeing} disagreeing")


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    world = World(store)
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()

"""Shared fixtures: databases (SQLite always, PostgreSQL where reachable), a fake provider."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from gateway.store import Store
from tests.world import World

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
    """The same tests run against both stores."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    else:
        if POSTGRES_SKIP:
            if os.environ.get("CONSENT_GATEWAY_REQUIRE_POSTGRES"):
                pytest.fail(POSTGRES_SKIP)
            pytest.skip(POSTGRES_SKIP)
        url = request.getfixturevalue("postgres_url")
        _run(url, lambda conn: conn.run_sync(drop_every_table), lambda conn: conn.execute(text(DROP_VERSION)))
    asyncio.run(upgraded(url))
    yield url


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
    store = Store.from_url(database_url)
    yield store
    await store.close()


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    world = World(store)
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()

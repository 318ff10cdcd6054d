"""Under load the API answers 503 with Retry-After, never 500, and a keyed retry then records
the decision exactly once: every pooled store connection is held while a decision arrives."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.config import ApiToken, Settings
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.http.routes import idempotent
from gateway.service import Gateway
from gateway.store.db import store_busy
from gateway.store.tables import decisions
from tests.e2e.conftest import DECISION, WRITER, auth
from tests.fakes import fake_adapter

POOL = 15  # SQLAlchemy's default pool: 5 connections and 10 more on demand


def writer_gateway(database_url: str, **settings: Any) -> Gateway:
    token = ApiToken(name="writer", sha256=hash_token(WRITER), scopes=["consents:write", "consents:read"])
    return Gateway(Settings(database_url=database_url, tokens=[token], **settings), adapters={"fake": fake_adapter()})


async def recorded(gateway: Gateway) -> int:
    """Decisions in the ledger: a retry that recorded twice shows here."""
    async with gateway.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(decisions))).scalar_one())


async def test_a_store_with_no_connection_free_is_a_503_and_the_retry_records_once(database_url: str) -> None:
    gateway = writer_gateway(database_url, database_pool_timeout_s=0.2)
    app = create_app(gateway, run_worker=False)
    headers = auth(WRITER) | {"Idempotency-Key": "busy-1"}
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        async with AsyncExitStack() as held:
            for _ in range(POOL):
                await held.enter_async_context(gateway.store.engine.connect())
            busy = await api.post("/v1/consents", json=DECISION, headers=headers)
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1" and busy.json()["type"].endswith("/store-busy")
        retried = await api.post("/v1/consents", json=DECISION, headers=headers)
        assert retried.status_code == 202, retried.text
        assert await recorded(gateway) == 1


class Refused(Exception):
    """What asyncpg raises through SQLAlchemy when PostgreSQL is out of connection slots."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("remaining connection slots are reserved for non-replication superuser connections")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "busy"),
    [
        (DBAPIError(None, None, Refused("53300")), True),  # too many clients: seen under load in the scale-out test
        (DBAPIError(None, None, Refused("57P03")), True),  # the server is starting
        (DBAPIError(None, None, Refused("40001")), True),  # serialization failure: retry
        (DBAPIError(None, None, Refused("23505")), False),  # a unique violation is a bug, not load
        (PoolTimeout("no connection came free"), True),
        (ValueError("a bug"), False),
    ],
    ids=["too-many-clients", "starting", "serialization", "unique-violation", "pool-timeout", "other"],
)
def test_load_is_told_from_faults(error: Exception, busy: bool) -> None:
    assert store_busy(error) is busy


async def test_an_answer_that_cannot_be_stored_is_a_503_and_the_retry_answers_the_recorded_decision(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = writer_gateway(database_url)
    app = create_app(gateway, run_worker=False)
    headers = auth(WRITER) | {"Idempotency-Key": "busy-2"}
    complete = gateway.store.keys.complete

    async def refused_once(*args: object) -> None:
        monkeypatch.setattr(gateway.store.keys, "complete", complete)
        raise DBAPIError("INSERT", None, Refused("53300"))

    monkeypatch.setattr(gateway.store.keys, "complete", refused_once)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        busy = await api.post("/v1/consents", json=DECISION, headers=headers)
        assert busy.status_code == 503, busy.text
        retried = await api.post("/v1/consents", json=DECISION, headers=headers)
        assert retried.status_code == 202, "the key was handed to the retry at once, not held for minutes"
        assert await recorded(gateway) == 1


async def test_a_key_the_busy_store_would_not_release_is_released_in_the_background(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = writer_gateway(database_url)
    app = create_app(gateway, run_worker=False)
    headers = auth(WRITER) | {"Idempotency-Key": "busy-3"}
    keys = gateway.store.keys
    complete, release = keys.complete, keys.release
    retried = asyncio.Event()

    async def refused(*args: object) -> None:
        raise DBAPIError("UPDATE", None, Refused("53300"))

    tries: list[int] = []

    async def release_once_free(*args: object) -> None:
        tries.append(1)
        if len(tries) == 1:
            await refused()  # the request's own release: the store is still busy
        await retried.wait()  # the background's: after the client's early retry
        await release(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(idempotent, "RELEASE_RETRIES_S", (0.0,))
    monkeypatch.setattr(keys, "complete", refused)
    monkeypatch.setattr(keys, "release", release_once_free)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        assert (await api.post("/v1/consents", json=DECISION, headers=headers)).status_code == 503
        monkeypatch.setattr(keys, "complete", complete)
        early = await api.post("/v1/consents", json=DECISION, headers=headers)
        assert early.status_code == 409 and early.headers["retry-after"] == "1", early.text
        retried.set()
        await asyncio.wait_for(asyncio.gather(*idempotent._releasing), 10)
        later = await api.post("/v1/consents", json=DECISION, headers=headers)
        assert later.status_code == 202, later.text
        assert await recorded(gateway) == 1

"""Under load the API answers 503 with Retry-After, never 500, and a keyed retry then records
the decision exactly once: every pooled store connection is held while a decision arrives."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.app import create_app
from gateway.auth import hash_token
from gateway.config import ApiToken, Settings
from gateway.problems import store_busy
from gateway.service import Gateway
from gateway.tables import decisions
from tests.e2e.conftest import DECISION, WRITER, auth
from tests.fakes import fake_adapter

POOL = 15  # SQLAlchemy's default pool: 5 connections and 10 more on demand


async def test_a_store_with_no_connection_free_is_a_503_and_the_retry_records_once(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        database_pool_timeout_s=0.2,
        tokens=[ApiToken(name="writer", sha256=hash_token(WRITER), scopes=["consents:write", "consents:read"])],
    )
    gateway = Gateway(settings, adapters={"fake": fake_adapter()})
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
        async with gateway.store.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(decisions))).scalar_one() == 1


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
    settings = Settings(
        database_url=database_url,
        tokens=[ApiToken(name="writer", sha256=hash_token(WRITER), scopes=["consents:write", "consents:read"])],
    )
    gateway = Gateway(settings, adapters={"fake": fake_adapter()})
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
        async with gateway.store.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(decisions))).scalar_one() == 1

"""Migrations: they build exactly the schema the code declares, adopt a database made before them,
and a schema that is behind is refused with the command that fixes it (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from asgi_lifespan import LifespanManager
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from gateway.config import Settings
from gateway.http.app import create_app
from gateway.service import Gateway
from gateway.store import Store
from gateway.store import migrate as schema
from gateway.store.migrate import SchemaError
from gateway.store.tables import idempotency_keys, metadata
from tests.fakes import fake_adapter
from tests.world import NOW


def differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def reset_to(store: Store, revision: str) -> None:
    """The database as it stood at ``revision`` (downgrading the one the fixture built)."""

    def downgrade(connection: Connection) -> None:
        config = schema.alembic_config(connection)
        command.downgrade(config, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(downgrade)


async def test_the_migrations_build_exactly_the_schema_the_code_declares(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []
    assert await schema.current(store.engine) == schema.head()


async def test_every_migration_downgrades_and_upgrades_again(store: Store) -> None:
    await reset_to(store, "base")
    assert await schema.current(store.engine) is None
    assert await store.upgrade() == (None, schema.head())
    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_answers_stored_whole_are_kept_as_decision_ids_after_the_upgrade(store: Store) -> None:
    await reset_to(store, "0007")
    whole = {"id": "d-1", "subject_id": "cust-1", "decision": {"subject": {"id": "cust-1", "email": "a@example.com"}}}
    batch = {"results": [{"index": 0, "status": "accepted", "decision": whole}, {"index": 1, "status": "rejected"}]}
    async with store.engine.begin() as conn:
        for key, answer in (("one", whole), ("batch", batch)):
            await conn.execute(
                idempotency_keys.insert().values(
                    scope="t",
                    key=key,
                    request_hash="h",
                    created_at=NOW,
                    expires_at=NOW,
                    response_status=202,
                    response_body=answer,
                )
            )
    await store.upgrade()
    async with store.engine.connect() as conn:
        kept = dict((await conn.execute(select(idempotency_keys.c.key, idempotency_keys.c.response_body))).all())
    assert kept["one"] == {"kept": 1, "decision": "d-1"}
    assert kept["batch"] == {
        "kept": 1,
        "results": [{"index": 0, "status": "accepted", "decision": "d-1"}, batch["results"][1]],
    }


async def test_a_database_made_before_migrations_is_adopted_not_created_again(store: Store) -> None:
    await reset_to(store, schema.BASELINE)
    async with store.engine.begin() as conn:
        await conn.execute(text("DROP TABLE alembic_version"))  # as `db upgrade` used to leave it
    assert await schema.current(store.engine) == schema.BASELINE
    assert await store.upgrade() == (schema.BASELINE, schema.head())
    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_a_schema_behind_is_refused_naming_the_fix(store: Store) -> None:
    await reset_to(store, "0001")
    with pytest.raises(SchemaError, match=r"at revision 0001, this version needs .*consent-gateway db upgrade"):
        await store.require_current()
    await reset_to(store, "base")
    with pytest.raises(SchemaError, match="no schema: run `consent-gateway db upgrade`"):
        await store.require_current()


@pytest.fixture
async def api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    gateway = Gateway(Settings(), store=store, adapters={"fake": fake_adapter()})
    app = create_app(gateway, run_worker=False)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as c:
        yield c


async def test_readiness_says_when_the_schema_falls_behind(api: httpx.AsyncClient, store: Store) -> None:
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    await reset_to(store, "0002")
    response = await api.get("/readyz")
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "schema" and "db upgrade" in error["message"]


async def test_readiness_says_when_the_store_does_not_answer(
    api: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable() -> None:
        raise ConnectionRefusedError("the database host refused the connection")

    monkeypatch.setattr(store, "ping", unreachable)
    response = await api.get("/readyz")
    assert response.status_code == 503
    [error] = response.json()["errors"]
    assert error["field"] == "store" and error["message"] == "the store does not answer (ConnectionRefusedError)"

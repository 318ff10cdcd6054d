"""The store's schema under alembic: upgrade it, say where a database stands, refuse one that is behind.

Migrations ship inside the package (``gateway/store/migrations``) and run on the gateway's own engine,
so ``db upgrade`` needs nothing but ``database_url``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.errors import GatewayError

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema `db upgrade` created before migrations existed
UPGRADE_HINT = "run `consent-gateway db upgrade`"


class SchemaError(GatewayError):
    """The database's schema is missing or behind the code's; the message says what to run."""


@dataclass(frozen=True)
class Revision:
    id: str
    down: str | None
    message: str


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head() -> str:
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None, "the package ships at least one migration"
    return found


def history() -> list[Revision]:
    """Every migration, newest first."""
    scripts = ScriptDirectory.from_config(alembic_config()).walk_revisions()
    return [Revision(s.revision, s.down_revision if isinstance(s.down_revision, str) else None, s.doc) for s in scripts]


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None when it has no schema at all."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def _current(connection: Connection) -> str | None:
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None and inspect(connection).has_table("decisions"):
        return BASELINE  # created before migrations existed
    return revision


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (from, to)."""
    async with engine.begin() as conn:
        return await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> tuple[str | None, str]:
    before = _current(connection)
    config = alembic_config(connection)
    if before == BASELINE and MigrationContext.configure(connection).get_current_revision() is None:
        command.stamp(config, BASELINE)  # adopt a database made before migrations, don't re-create it
    command.upgrade(config, "head")
    return before, head()


async def require_current(engine: AsyncEngine) -> None:
    """Raise SchemaError unless the database is at the newest revision."""
    at, wanted = await current(engine), head()
    if at is None:
        raise SchemaError(f"the database has no schema: {UPGRADE_HINT}")
    if at != wanted:
        raise SchemaError(f"the database schema is at revision {at}, this version needs {wanted}: {UPGRADE_HINT}")

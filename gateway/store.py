"""Durable state behind one interface, on SQLite (embedded default) or PostgreSQL.

The same tests run against both. SQLite is single-instance; PostgreSQL lets any number of
API processes and workers share one store.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine
from gateway.idempotency import IdempotencyKeys
from gateway.ledger import Ledger
from gateway.outbox import Outbox
from gateway.tables import metadata


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.ledger = Ledger(engine)
        self.outbox = Outbox(engine)
        self.keys = IdempotencyKeys(engine)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(create_engine(url))

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

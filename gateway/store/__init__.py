"""Durable state behind one interface, on SQLite (embedded default) or PostgreSQL.

The same tests run against both. SQLite is single-instance; PostgreSQL lets any number of
API processes and workers share one store.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import migrate as schema
from gateway.store.backfills import Backfills
from gateway.store.db import Pool, create_engine
from gateway.store.drift_rows import DriftRows
from gateway.store.erasures import ErasureRecords
from gateway.store.events import Events
from gateway.store.expiries import ExpiryQueue
from gateway.store.idempotency import IdempotencyKeys
from gateway.store.ledger import Ledger
from gateway.store.observations import Observations, Runs
from gateway.store.outbox import Outbox
from gateway.store.ratelimit import Admission, Budget, RateLimit, SharedAdmission, SharedBudget, Sleep
from gateway.store.repairs import FutureDates
from gateway.store.sessions import AdminSessions
from gateway.store.snapshot import Snapshots


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.ledger = Ledger(engine)
        self.outbox = Outbox(engine)
        self.keys = IdempotencyKeys(engine)
        self.observations = Observations(engine)
        self.runs = Runs(engine)
        self.events = Events(engine)
        self.backfills = Backfills(engine)
        self.sessions = AdminSessions(engine)
        self.snapshots = Snapshots(engine)
        self.drift_rows = DriftRows(engine)
        self.erasures = ErasureRecords(engine, self.ledger)
        self.expiries = ExpiryQueue(engine)
        self.future_dates = FutureDates(self.ledger)

    @classmethod
    def from_url(cls, url: str, pool: Pool | None = None) -> Store:
        return cls(create_engine(url, pool))

    async def upgrade(self) -> tuple[str | None, str]:
        """Migrate the schema to the newest revision (alembic); returns (from, to)."""
        return await schema.upgrade(self.engine)

    async def current(self) -> str | None:
        """The schema's revision here (None: no schema yet)."""
        return await schema.current(self.engine)

    async def require_current(self) -> None:
        """SchemaError naming the fix unless the schema is at the newest revision."""
        await schema.require_current(self.engine)

    def budget(self, provider: str, per_minute: float, sleep: Sleep) -> Budget:
        """A provider's request budget: shared by every worker on PostgreSQL, per process on SQLite."""
        if self.engine.dialect.name == "postgresql":
            return SharedBudget(self.engine, provider, per_minute, sleep=sleep)
        return RateLimit(per_minute, sleep=sleep)

    def admission(self, token: str, per_minute: float, burst: float) -> Admission:
        """An API token's request limit: shared by every API process on PostgreSQL, per process on SQLite."""
        if self.engine.dialect.name == "postgresql":
            return SharedAdmission(self.engine, token, per_minute, burst)
        return RateLimit(per_minute, burst=burst)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

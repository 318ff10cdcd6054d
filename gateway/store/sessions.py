"""Admin page sessions, kept server-side: signing out, or removing the token that opened one,
ends it at once, in every process sharing the store.

The browser's cookie (signed by Starlette's session middleware) carries only a random session
id; the store keeps its digest, the digest of the token that opened it and when it ends.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.db import reader
from gateway.store.tables import admin_sessions


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class AdminSessions:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def open(self, token_sha256: str, now: datetime, max_age_s: float) -> str:
        """A new session for the token with this digest; its id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        ends = now + timedelta(seconds=max_age_s)
        row = {"id": _digest(session_id), "token_sha256": token_sha256, "created_at": now, "expires_at": ends}
        async with self.engine.begin() as conn:
            await conn.execute(delete(admin_sessions).where(admin_sessions.c.expires_at <= now))
            await conn.execute(admin_sessions.insert().values(row))
        return session_id

    async def holder(self, session_id: str, now: datetime) -> str | None:
        """The digest of the token that opened the session, while it is open."""
        table = admin_sessions
        query = select(table.c.token_sha256).where(table.c.id == _digest(session_id), table.c.expires_at > now)
        async with reader(self.engine).connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def close(self, session_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(admin_sessions).where(admin_sessions.c.id == _digest(session_id)))

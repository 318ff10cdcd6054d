"""An in-process gateway (ASGI app + lifespan + worker) over a fake provider, and its tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from gateway.config import ApiToken, Settings
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.service import Gateway
from gateway.store.tables import decisions, deliveries, subjects
from tests.fakes import fake_adapter
from tests.processes import Processes

WRITER, READER, ADMIN = "writer-token-abcdefgh", "reader-token-abcdefgh", "admin-token-abcdefgh"
DECISION: dict[str, Any] = {
    "subject": {"id": "cust-42", "email": "ana@example.com", "phone": "+14155550100"},
    "purposes": {"email_marketing": "granted", "sms_marketing": "denied"},
    "occurred_at": "2026-11-23T10:00:00Z",
    "source": "web",
}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Every process a test starts is killed when it ends, whatever the outcome."""
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        max_body_bytes=4096,
        tokens=[
            ApiToken(name="writer", sha256=hash_token(WRITER), scopes=["consents:write", "consents:read"]),
            ApiToken(name="reader", sha256=hash_token(READER), scopes=["consents:read"]),
            ApiToken(name="admin", sha256=hash_token(ADMIN), scopes=["admin"]),
        ],
    )
    failures: list[int] = []  # statuses the fake provider answers next, then 200s

    def provider(request: httpx.Request) -> httpx.Response:
        status = failures.pop(0) if failures else 200
        return httpx.Response(status, json={"error": "refused by the fake provider"} if status >= 400 else {})

    gateway = Gateway(settings, adapters={"fake": fake_adapter()}, transports={"fake": httpx.MockTransport(provider)})
    app = create_app(gateway)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            client.gateway = gateway  # type: ignore[attr-defined]
            client.failures = failures  # type: ignore[attr-defined]
            yield client


def replayable(answer: Any) -> Any:
    """An answer as a replay repeats it: the same, but each delivery's status and times as they
    stand now (a replay reads its decisions back from the ledger)."""
    if isinstance(answer, dict):
        if "deliveries" in answer:
            answer = answer | {"deliveries": [{"id": d["id"], "provider": d["provider"]} for d in answer["deliveries"]]}
        return {key: replayable(value) for key, value in answer.items()}
    return [replayable(item) for item in answer] if isinstance(answer, list) else answer


async def stored_rows(client: httpx.AsyncClient) -> int:
    engine = client.gateway.store.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        total = 0
        for table in (decisions, subjects, deliveries):
            total += (await conn.execute(select(func.count()).select_from(table))).scalar_one()
        return int(total)

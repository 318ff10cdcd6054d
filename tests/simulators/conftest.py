"""Fixtures for driving the simulators in-process, by hand-built requests (never through an adapter)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import ASGIApp

from tests.simulators.helpers import ClientFactory, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Build `httpx.AsyncClient`s over ASGI apps; all are closed at teardown."""
    clients: list[httpx.AsyncClient] = []

    def make(app: ASGIApp, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim", headers=headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()

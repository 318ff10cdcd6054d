"""A real gateway for a downstream test: its API in-process over ASGI, SQLite in a temporary
directory, and each provider answered by a cassette (or recorded through one).

No server, no network and no Starlette TestClient: ``client`` is an ``httpx.AsyncClient`` on
the app, already holding an API token, and ``drain()`` runs the worker until every delivery
due is done, so a test sees deliveries settle without sleeping. A request a cassette does not
hold fails ``drain()`` (and the ``async with`` block) with the cassette's diff, not later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx
import structlog
from starlette.applications import Starlette

from gateway.config import ApiToken, Settings
from gateway.http.app import create_app
from gateway.redaction import configure_logging
from gateway.service import Gateway
from gateway.testing.library import ProviderCassette
from gateway.testing.replay import CassetteMiss

TOKEN = "consent-gateway-test-token"  # a stand-in: it opens only this in-process API


async def _no_wait(seconds: float) -> None:
    """Retry backoff and rate budgets pass at once: a replay has no provider to spare."""


class GatewayHarness:
    """Use as ``async with consent_gateway as gateway:``; the API answers at ``gateway.client``."""

    def __init__(self, cassettes: Sequence[ProviderCassette], directory: Path) -> None:
        self.cassettes = {cassette.provider: cassette for cassette in cassettes}
        if len(self.cassettes) != len(cassettes):
            raise ValueError("one cassette per provider: a gateway has one lane per provider")
        self.settings = Settings(
            database_url=f"sqlite+aiosqlite:///{directory / 'consent-gateway.db'}",
            tokens=[ApiToken(name="test", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())],
            providers={name: cassette.values for name, cassette in self.cassettes.items()},
        )
        self.gateway = Gateway(
            self.settings,
            transports={name: cassette.transport for name, cassette in self.cassettes.items()},
            sleep=_no_wait,
        )
        self.app: Starlette = create_app(self.gateway, run_worker=False)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://consent-gateway.test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    async def __aenter__(self) -> GatewayHarness:
        if not structlog.is_configured():  # structlog's default renderer takes minutes over a worker's traceback
            # as text, once: pytest's log capture shows it under a failing test
            configure_logging(self.gateway.secrets(), logging.WARNING, console=True, stderr=False)
        await self.gateway.start(run_worker=False, migrate=True)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        await self.client.aclose()
        await self.gateway.stop()
        if kind is None:
            self.raise_first_miss()

    async def drain(self) -> None:
        """Deliver everything due now (retries included), as the worker would."""
        __tracebackhide__ = True
        await self.gateway.worker.drain()
        self.raise_first_miss()

    def raise_first_miss(self) -> None:
        """A request no cassette holds fails the test here, with the diff first: the worker caught
        it as a crashed delivery, whose traceback (respx and httpx internals) would say nothing."""
        __tracebackhide__ = True
        for cassette in self.cassettes.values():
            if cassette.replayer is not None and cassette.replayer.misses:
                raise CassetteMiss(str(cassette.replayer.misses[0])) from None

"""The Starlette application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from gateway.auth import Authenticator
from gateway.problems import EXCEPTION_HANDLERS
from gateway.routes import consents, deliveries, ops, subjects
from gateway.service import Gateway


def create_app(
    gateway: Gateway, *, extra_routes: Sequence[BaseRoute] = (), run_worker: bool | None = None
) -> Starlette:
    """The API around ``gateway``; ``extra_routes`` mounts e.g. the demo's simulators."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start(run_worker=run_worker)
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[*ops.routes, *consents.routes, *subjects.routes, *deliveries.routes, *extra_routes],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.authenticator = Authenticator(gateway.settings.tokens)
    return app

"""The Starlette application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gateway.http.admin import create_admin_app
from gateway.http.auth import Authenticator
from gateway.http.headers import SecurityHeaders
from gateway.http.limits import TokenLimits
from gateway.http.metering import RequestMetrics
from gateway.http.problems import EXCEPTION_HANDLERS
from gateway.http.routes import backfills, consents, deliveries, events, ops, reconciliation, subjects
from gateway.service import Gateway

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def create_app(
    gateway: Gateway,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    run_worker: bool | None = None,
    migrate: bool = False,
) -> Starlette:
    """The API around ``gateway``; ``extra_routes`` mounts e.g. the demo's simulators; ``migrate``
    upgrades the schema at start-up (the demo), else a schema that is behind stops it."""

    app = Starlette(
        routes=[
            *ops.routes,
            *consents.routes,
            *subjects.routes,
            *deliveries.routes,
            *reconciliation.routes,
            *events.routes,
            *backfills.routes,
            *extra_routes,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(RequestMetrics, metrics=gateway.metrics), Middleware(SecurityHeaders)],
        lifespan=_lifespan(gateway, run_worker=run_worker, migrate=migrate),
    )
    app.state.gateway = gateway
    app.state.authenticator = Authenticator(gateway.settings.tokens)
    app.state.limits = TokenLimits(gateway.store, gateway.settings)
    app.mount("/admin", create_admin_app(gateway, app.state.authenticator))
    return app


def create_worker_app(gateway: Gateway) -> Starlette:
    """A worker process's own HTTP side: ``/metrics``, ``/healthz`` and ``/readyz`` only."""
    app = Starlette(
        routes=ops.health_routes,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(SecurityHeaders)],
        lifespan=_lifespan(gateway, run_worker=True),
    )
    app.state.gateway = gateway
    return app


def _lifespan(gateway: Gateway, *, run_worker: bool | None, migrate: bool = False) -> Lifespan:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start(run_worker=run_worker, migrate=migrate)
        try:
            yield
        finally:
            await gateway.stop()

    return lifespan

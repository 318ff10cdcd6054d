"""Operations endpoints: health, readiness and the OpenAPI document (no auth)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__
from gateway.http import docs, openapi
from gateway.http.openapi import Operation, documented
from gateway.http.problems import respond
from gateway.http.responses import JSONResponse
from gateway.http.state import gateway_of
from gateway.refusals import TYPE_BASE
from gateway.store.migrate import SchemaError
from schemas.api import Health
from schemas.consent import EARLIEST
from schemas.problem import FieldError, Problem


@documented(Operation("Liveness: the process answers", Health))
async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@documented(Operation("Readiness: the store answers and its schema is current; else 503 saying which", Health))
async def readyz(request: Request) -> Response:
    store = gateway_of(request).store
    try:
        await store.ping()
    except Exception as error:  # whatever the driver raises: its text may name hosts or users
        return _not_ready("store", f"the store does not answer ({type(error).__name__})")
    try:
        await store.require_current()
    except SchemaError as error:
        return _not_ready("schema", str(error))
    return JSONResponse({"status": "ready"})


def _not_ready(field: str, message: str) -> Response:
    errors = [FieldError(field=field, message=message)]
    return respond(Problem(type=TYPE_BASE + "not-ready", title="Not ready", status=503, detail=message, errors=errors))


async def openapi_json(request: Request) -> Response:
    return JSONResponse(_document(request))


async def api_docs(request: Request) -> Response:
    """The same document as a page for people (no script, nothing fetched from elsewhere)."""
    return docs.page(request, _document(request))


def _document(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    settings = gateway.settings
    deployment = openapi.Deployment(
        vocabulary={
            "purposes": settings.purposes,
            "providers": list(gateway.adapters),
            "readable": gateway.reconciler.observable(),
            "years": [str(year) for year in range(EARLIEST.year, gateway.clock().year + 1)],
        },
        body_limits={"max_body_bytes": settings.max_body_bytes, "max_batch_body_bytes": settings.max_batch_body_bytes},
    )
    return openapi.build(request.app.routes, "consent-gateway", __version__, deployment)


async def metrics(request: Request) -> Response:
    """Prometheus text format; queue depth and the oldest due delivery's age are read at scrape time."""
    gateway = gateway_of(request)
    stats = await gateway.store.outbox.queue_stats(gateway.clock())
    for provider in gateway.adapters:
        depth, age = stats.get(provider, (0, 0.0))
        gateway.metrics.queue_depth.labels(provider).set(depth)
        gateway.metrics.oldest_due.labels(provider).set(age)
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


health_routes = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
"""What a worker process serves on its own port."""
routes = [
    *health_routes,
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", api_docs, methods=["GET"]),
]

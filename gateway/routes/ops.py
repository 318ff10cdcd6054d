"""Operations endpoints: health, readiness and the OpenAPI document (no auth)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import openapi
from gateway.openapi import Operation, documented
from schemas.api import Health


@documented(Operation("Liveness: the process answers", Health))
async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@documented(Operation("Readiness: the store answers", Health))
async def readyz(request: Request) -> Response:
    await request.app.state.gateway.store.ping()
    return JSONResponse({"status": "ready"})


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.build(request.app.routes, "consent-gateway", "1"))


async def metrics(request: Request) -> Response:
    """Prometheus text format; queue depth and the oldest due delivery's age are read at scrape time."""
    gateway = request.app.state.gateway
    stats = await gateway.store.outbox.queue_stats(gateway.clock())
    for provider in gateway.adapters:
        depth, age = stats.get(provider, (0, 0.0))
        gateway.metrics.queue_depth.labels(provider).set(depth)
        gateway.metrics.oldest_due.labels(provider).set(age)
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]

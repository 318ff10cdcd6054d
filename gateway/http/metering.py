"""API requests counted and timed for ``/metrics``, by route template, never by raw path."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics


class RequestMetrics:
    """Counts every answered request by route template, method and status, and times it. The
    template (``/v1/consents/{decision_id}``) keeps subject and decision ids out of the series.
    Pure ASGI: no per-request task or body buffering."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), 500  # an exception that escapes is answered 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")
            template = scope.get("root_path", "") + route.path if route is not None else "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template, scope["method"]).observe(time.perf_counter() - began)

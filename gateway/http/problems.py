"""RFC 9457 problem details: every error the API answers, with a field-level ``errors`` list (a
:class:`~gateway.refusals.Refusal` carries its own; the handlers here answer the rest)."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from gateway.http.responses import JSONResponse
from gateway.refusals import TYPE_BASE, Refusal, busy_or_raise
from schemas.problem import Problem

log = structlog.get_logger("consent_gateway.api")
MEDIA_TYPE = "application/problem+json"


def respond(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(problem.model_dump(exclude_none=True), problem.status, headers, media_type=MEDIA_TYPE)


async def on_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return respond(exc.problem, exc.headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    title = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the first route's methods only (GET, not DELETE)
        headers["Allow"] = ", ".join(sorted(_allowed(request)))
    return respond(Problem(type=TYPE_BASE + slug, title=title, status=exc.status_code), headers)


def _allowed(request: Request) -> set[str]:
    """Every method some route serves at the request's path."""
    routes = [route for route in request.app.routes if isinstance(route, Route) and route.methods]
    return {
        method
        for route in routes
        if route.matches(request.scope)[0] is not Match.NONE
        for method in route.methods or ()
    }


def busy_logged(exc: Exception) -> Refusal:
    """Load is not a fault: a busy store is refused with 503 and Retry-After (the client retries,
    with its Idempotency-Key), and logged; any other store error is raised again, for the crash handler."""
    refused = busy_or_raise(exc)
    log.warning("store_busy", error=type(exc).__name__)
    return refused


async def on_store_error(_request: Request, exc: Exception) -> Response:
    refused = busy_logged(exc)
    return respond(refused.problem, refused.headers)


async def on_crash(_request: Request, _exc: Exception) -> Response:
    return respond(Problem(type=TYPE_BASE + "internal-error", title="Internal server error", status=500))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    Refusal: on_problem,
    HTTPException: on_http_error,
    sa_exc.SQLAlchemyError: on_store_error,
    OSError: on_store_error,
    Exception: on_crash,
}

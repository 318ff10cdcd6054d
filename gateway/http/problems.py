"""RFC 9457 problem details: every error the API answers, with a field-level ``errors`` list."""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from gateway.http.responses import JSONResponse
from schemas.problem import FieldError, Problem

log = structlog.get_logger("consent_gateway.api")
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://consent-gateway.dev/problems/"


class ProblemError(Exception):
    """Raised anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.problem = Problem(type=TYPE_BASE + slug, title=title, status=status, detail=detail, errors=errors or [])
        self.headers = headers


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Pydantic errors as field paths; input values are never echoed (they may be personal data)."""
    found = []
    for item in error.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        field = ".".join(part for part in (prefix, path) if part) or "body"
        found.append(FieldError(field=field, message=item["msg"].removeprefix("Value error, ")))
    return found


def invalid(error: ValidationError, prefix: str = "", status: int = 422) -> ProblemError:
    """422 for a body that is not valid; 400 for bad query parameters."""
    errors = field_errors(error, prefix)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return ProblemError(status, "validation-error", "The request is not valid", detail, errors)


def bad_parameter(field: str, message: str, status: int = 400) -> ProblemError:
    """A 400 for one bad query parameter or header (422 for one bad body field)."""
    errors = [FieldError(field=field, message=message)]
    return ProblemError(status, "validation-error", "The request is not valid", f"{field}: {message}", errors)


def not_found(what: str, detail: str | None = None) -> ProblemError:
    """A 404 for a ``what`` (subject, delivery, run…) this gateway does not have."""
    return ProblemError(404, "not-found", f"No such {what}", detail)


def erased(detail: str, field: str = "subject.id", status: int = 409) -> ProblemError:
    """A decision, adoption or read for a subject that was erased (gateway.erasure)."""
    return ProblemError(status, "subject-erased", "Subject erased", detail, [FieldError(field=field, message=detail)])


def respond(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(problem.model_dump(exclude_none=True), problem.status, headers, media_type=MEDIA_TYPE)


async def on_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
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


RETRYABLE_STATES = ("08", "40001", "40P01", "53", "57P03")  # connection lost, conflict, out of resources, starting


def store_busy(exc: BaseException) -> bool:
    """The store could not take the request now: no pooled connection came free in time, the
    server refused a connection (too many clients, starting up, gone), a conflict it asks to
    retry, or SQLite's lock wait ran out. Its transaction rolled back: retrying is safe."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError | OSError):
        return True
    state = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    return isinstance(exc, sa_exc.DBAPIError) and state.startswith(RETRYABLE_STATES)


async def on_store_error(_request: Request, exc: Exception) -> Response:
    """Load is not a fault: 503 with Retry-After (the client retries, with its Idempotency-Key);
    any other store error goes on to :func:`on_crash`."""
    if not store_busy(exc):
        raise exc
    log.warning("store_busy", error=type(exc).__name__)
    problem = Problem(type=TYPE_BASE + "store-busy", title="Busy, retry shortly", status=503)
    return respond(problem, {"Retry-After": "1"})


async def on_crash(_request: Request, _exc: Exception) -> Response:
    return respond(Problem(type=TYPE_BASE + "internal-error", title="Internal server error", status=500))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProblemError: on_problem,
    HTTPException: on_http_error,
    sa_exc.SQLAlchemyError: on_store_error,
    OSError: on_store_error,
    Exception: on_crash,
}

"""RFC 9457 problem details: every error the API answers, with a field-level ``errors`` list."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from gateway.responses import JSONResponse
from schemas.problem import FieldError, Problem

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


async def on_crash(_request: Request, _exc: Exception) -> Response:
    return respond(Problem(type=TYPE_BASE + "internal-error", title="Internal server error", status=500))


EXCEPTION_HANDLERS: dict[Any, Any] = {ProblemError: on_problem, HTTPException: on_http_error, Exception: on_crash}

"""Why the gateway refuses what a person asked of it: one exception for every caller to translate.

The use cases (``gateway.service``) and the HTTP layer raise it; the API and the admin page answer it
as an RFC 9457 problem document, the CLI as an error line and exit status. It carries the problem
document itself (with the HTTP status the API answers), so the three say the same thing.
"""

from __future__ import annotations

from pydantic import ValidationError

from gateway.store.db import store_busy
from schemas.problem import FieldError, Problem

TYPE_BASE = "https://consent-gateway.dev/problems/"


class Refusal(Exception):
    """A refused action and the problem document that says why."""

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


def invalid(error: ValidationError, prefix: str = "", status: int = 422) -> Refusal:
    """422 for a body that is not valid; 400 for bad query parameters."""
    errors = field_errors(error, prefix)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Refusal(status, "validation-error", "The request is not valid", detail, errors)


def bad_parameter(field: str, message: str, status: int = 400) -> Refusal:
    """A 400 for one bad query parameter or header (422 for one bad body field)."""
    errors = [FieldError(field=field, message=message)]
    return Refusal(status, "validation-error", "The request is not valid", f"{field}: {message}", errors)


def not_found(what: str, detail: str | None = None) -> Refusal:
    """A 404 for a ``what`` (subject, delivery, run…) this gateway does not have."""
    return Refusal(404, "not-found", f"No such {what}", detail)


def erased(detail: str, field: str = "subject.id", status: int = 409) -> Refusal:
    """A decision, adoption or read for a subject that was erased (gateway.erasure)."""
    return Refusal(status, "subject-erased", "Subject erased", detail, [FieldError(field=field, message=detail)])


def busy_or_raise(error: Exception) -> Refusal:
    """The refusal for a store that could not take the action now (``store_busy``): nothing was
    done, and the same action again, shortly, is safe. Any other store error is raised again."""
    if not store_busy(error):
        raise error
    return Refusal(503, "store-busy", "Busy, retry shortly", headers={"Retry-After": "1"})

"""Intempt consent simulator: ``POST /v1/{org}/projects/{project}/consents/data`` (host https://api.intempt.com).

Auth: query ``apiKey=<prefix>.<secret>`` (the docs) or ``Authorization: Basic base64(prefix:secret)`` (the
SDK); missing or malformed → 401 ``{"error": "Unauthorized", "message"}``. Body errors → 400
``{"error": "Invalid request", "message": "Required field 'action' is missing or invalid"}``-style, naming
the field. Success → 200 ``{}``. No provider-specific ``/_faults`` controls.

The timestamp trap (PROVIDERS.md, from the official SDK): the server reads ``timestamp`` as *seconds* and
checks ``timestamp * 1000`` against 2010-2040: earlier → 400; later → silently replaced with "now". A client
that sends milliseconds (as the docs say) therefore gets 200 and a wrong time; the stored record carries
``"timestamp_replaced": true`` so ``_inspect`` shows it.

Decisions where the docs are silent: the latest *received* action per category wins (the API has no
ordering key); no ``category`` applies to every configured category; a record with neither ``userId`` nor
``profileId`` is kept in ``records`` but changes no per-user state; ``sourceId``, whenever sent, must be a
string (the doc examples' numeric ``sourceId`` is what the SDK says the server rejects); ``validUntil`` in
the past is accepted (nothing documents a rejection). ``_inspect`` state:
``{"categories", "consents": {org: {project: {user: {category: {action, timestamp_ms, validUntil}}}}},
"records": [...]}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.simulators.common import Faults, Reject, Simulator, authorization, basic_credentials

__all__ = ["DEFAULT_CATEGORIES", "create_app"]

DEFAULT_CATEGORIES = ("email", "sms", "push", "analytics", "personalization", "marketing")
ACTIONS = ("accept", "reject")
EARLIEST_MS = int(datetime(2010, 1, 1, tzinfo=UTC).timestamp() * 1000)
LATEST_MS = int(datetime(2040, 1, 1, tzinfo=UTC).timestamp() * 1000)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": "Invalid request" if status == 400 else HTTPStatus(status).phrase, "message": message}


def _invalid(message: str) -> Reject:
    return Reject(400, _error_body(400, message))


def _required(field: str) -> Reject:
    return _invalid(f"Required field '{field}' is missing or invalid")


def _epoch_number(value: Any) -> float | None:
    """A number, or a string of ASCII digits (the docs type these fields as strings, clients send numbers)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return float(value)
    return None


def _well_formed(key: str) -> bool:
    prefix, dot, secret = key.partition(".")
    return bool(dot and prefix and secret)


class _Intempt:
    """State and handlers of one Intempt simulator."""

    def __init__(self, faults: Faults | None, categories: tuple[str, ...], clock: Callable[[], float]) -> None:
        self.categories = categories
        self.clock = clock
        self.consents: dict[str, dict[str, dict[str, dict[str, dict[str, Any]]]]] = {}
        self.records: list[dict[str, Any]] = []
        self.sim = Simulator(
            faults=faults,
            error_body=_error_body,
            state=lambda: {
                "categories": list(self.categories),
                "consents": self.consents,
                "records": self.records,
            },
            reset=self.reset,
            authenticate=self.authenticate,
        )

    def reset(self) -> None:
        self.consents.clear()
        self.records.clear()

    def authenticate(self, request: Request) -> None:
        key = request.query_params.get("apiKey")
        if key is None:
            auth = authorization(request)
            credentials = basic_credentials(auth[1]) if auth and auth[0] == "basic" else None
            if credentials is None:
                raise Reject(401, {"error": "Unauthorized", "message": "Send ?apiKey= or Basic credentials"})
            key = ".".join(credentials)
            self.sim.remember_secret(credentials[1])
        self.sim.remember_secret(key)
        if not _well_formed(key):
            raise Reject(401, {"error": "Unauthorized", "message": "API key must look like <prefix>.<secret>"})

    def validate(self, body: Any) -> tuple[int, bool]:
        """Check the body; answer (timestamp in ms as the server stores it, whether it was replaced)."""
        if not isinstance(body, dict):
            raise _invalid("Request body must be a JSON object")
        if body.get("action") not in ACTIONS:
            raise _required("action")
        seconds = _epoch_number(body.get("timestamp"))
        if seconds is None:
            raise _required("timestamp")
        if body.get("validUntil") != "unlimited" and _epoch_number(body.get("validUntil")) is None:
            raise _required("validUntil")
        if not isinstance(body.get("source"), str) or not body["source"].strip():
            raise _required("source")
        if "category" in body and body["category"] not in self.categories:
            raise _invalid(f"Field 'category' must be one of the configured categories: {', '.join(self.categories)}")
        for field in ("userId", "email", "message", "profileId"):
            if field in body and not isinstance(body[field], str):
                raise _invalid(f"Field '{field}' must be a string")
        if "profileId" in body and "sourceId" not in body:
            raise _invalid("Field 'sourceId' is required with 'profileId'")
        if "sourceId" in body and not isinstance(body["sourceId"], str):
            raise _invalid("Field 'sourceId' must be a string")
        millis = seconds * 1000
        if millis < EARLIEST_MS:
            raise _invalid("Field 'timestamp' is before 2010 (it is read as seconds since the epoch)")
        if millis > LATEST_MS:
            return int(self.clock() * 1000), True
        return int(millis), False

    async def record(self, request: Request, body: Any) -> Response:
        millis, replaced = self.validate(body)
        org, project = request.path_params["org"], request.path_params["project"]
        user = body.get("userId") or body.get("profileId")
        self.records.append(
            {
                "org": org,
                "project": project,
                "user": user,
                "body": body,
                "timestamp_ms": millis,
                "timestamp_replaced": replaced,
            }
        )
        if user:
            latest = {"action": body["action"], "timestamp_ms": millis, "validUntil": body["validUntil"]}
            per_user = self.consents.setdefault(org, {}).setdefault(project, {}).setdefault(user, {})
            for category in [body["category"]] if "category" in body else self.categories:
                per_user[category] = latest
        return JSONResponse({})


def create_app(
    faults: Faults | None = None,
    *,
    categories: Iterable[str] = DEFAULT_CATEGORIES,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """An Intempt simulator; `categories` are the ones "already configured in org settings"."""
    intempt = _Intempt(faults, tuple(categories), clock)
    sim = intempt.sim
    return sim.build([sim.route("/v1/{org}/projects/{project}/consents/data", intempt.record, ["POST"])])

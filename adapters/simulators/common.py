"""Machinery shared by the provider simulators: fault injection, the request log, redaction, control routes.

Each simulator is a small Starlette app built by :class:`Simulator`. Its API routes go through one wrapper
that logs the request, injects faults, authenticates and parses JSON; provider code only raises
:class:`Reject` or returns a response. The control routes below are never faulted and never logged:

``GET /_inspect``
    ``{"state": <provider state>, "requests": [<log entry>, ...]}``. A log entry is
    ``{"method", "path", "query", "headers", "body", "status", "at", "done"}``; ``status`` and ``done``
    are ``null`` while the simulator is still answering (e.g. hanging on an injected timeout); ``at`` and
    ``done`` are Unix times of arrival and answer, so a test can see what was in flight at once.
    Secrets are ``"<redacted>"``.
``POST /_faults``
    JSON object with any subset of the :class:`Faults` fields, plus the provider's own controls (see
    each simulator's docstring). All-or-nothing: anything invalid → 400 and nothing changes. Answers the
    settings now in force, so a body of ``{}`` reads them back.
``POST /_reset``
    Back to as-created: provider state, request log, faults (and RNG seed), issued tokens. Answers ``{}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = [
    "LOG_LIMIT",
    "REDACTED",
    "Faults",
    "Reject",
    "Simulator",
    "authorization",
    "basic_credentials",
]

REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie"})
SECRET_QUERY_PARAMS = frozenset({"apikey"})  # compared lower-cased
LOG_LIMIT = 10_000  # keep the log bounded when a benchmark runs against a simulator
# Shorter secrets are only replaced where they are a whole value: replacing a 3-character key inside every
# string would shred the log without protecting anything.
MIN_SUBSTRING_SECRET = 8

ErrorBody = Callable[[int, str], dict[str, Any] | None]
Handler = Callable[[Request, Any], Awaitable[Response]]
Authenticate = Callable[[Request], None]
Controls = Callable[[dict[str, Any]], dict[str, Any]]


class Faults(BaseModel):
    """Faults injected on API routes; a simulated outage must look like the provider's own errors."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0, ge=0)
    error_rate: float = Field(default=0, ge=0, le=1)
    # Status of injected errors, and their Retry-After header (seconds, omitted when None).
    status: int = Field(default=503, ge=400, le=599)
    retry_after_s: float | None = Field(default=None, ge=0)
    # Share of requests that hang `hang_s` seconds, then answer 504: the client's timeout fires first.
    timeout_rate: float = Field(default=0, ge=0, le=1)
    hang_s: float = Field(default=30, ge=0)
    # Seeds the simulator's random.Random, so a fault sequence is reproducible.
    seed: int | None = None
    # Only requests whose path this regex matches are faulted (Masivo's PATCH fails, its token exchange answers).
    path: str | None = None

    @field_validator("path")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"path is not a regex: {error}") from None
        return value


class Reject(Exception):
    """Raised by provider code to answer with an error body in the provider's shape."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def authorization(request: Request) -> tuple[str, str] | None:
    """Split the Authorization header into (lower-cased scheme or "", credentials); None when absent or blank.

    A value without a space has no scheme word (Wix API keys are sent that way).
    """
    value = request.headers.get("authorization", "").strip()
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return (scheme.lower(), credentials.strip()) if credentials else ("", value)


def basic_credentials(credentials: str) -> tuple[str, str] | None:
    """Decode HTTP Basic credentials into (user, password); None unless both parts are present."""
    try:
        user, sep, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user and password else None


class Simulator:
    """Holds one simulator's faults, RNG, request log and known secrets, and builds its Starlette app."""

    def __init__(
        self,
        *,
        faults: Faults | None,
        error_body: ErrorBody,
        state: Callable[[], Any],
        reset: Callable[[], None],
        authenticate: Authenticate | None = None,
        controls: Controls | None = None,
    ) -> None:
        self._initial = faults or Faults()
        self.faults = self._initial
        self.rng = random.Random(self._initial.seed)
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._error_body = error_body
        self._state = state
        self._reset_state = reset
        self._authenticate = authenticate
        self._controls = controls
        self._secrets: set[str] = set()

    # --- secrets -------------------------------------------------------------------------------------
    def remember_secret(self, value: str) -> None:
        """Register a value (key, token) that must never appear in `_inspect` output."""
        if value:
            self._secrets.add(value)

    def scrub(self, value: Any) -> Any:
        """Replace every known secret inside a JSON-like value."""
        if isinstance(value, str):
            if value in self._secrets:
                return REDACTED
            for secret in self._secrets:
                if len(secret) >= MIN_SUBSTRING_SECRET and secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {self.scrub(key): self.scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(item) for item in value]
        return value

    def _redact_pairs(self, pairs: Iterable[tuple[str, str]], secret_names: frozenset[str]) -> dict[str, str]:
        redacted: dict[str, str] = {}
        for name, value in pairs:
            if name.lower() in secret_names:
                self.remember_secret(value)
                self.remember_secret(value.partition(" ")[2].strip())  # the credential after a scheme word
                value = REDACTED
            redacted[name] = value
        return redacted

    # --- responses -----------------------------------------------------------------------------------
    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        """An error response in the provider's own shape (an empty body where the provider sends none)."""
        body = self._error_body(status, message)
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _injected(self, path: str) -> Response | None:
        faults = self.faults
        if faults.path is not None and re.search(faults.path, path) is None:
            return None
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if self.rng.random() < faults.timeout_rate:
            await asyncio.sleep(faults.hang_s)
            return self.error(504, "Simulated upstream timeout")
        if self.rng.random() < faults.error_rate:
            headers = None if faults.retry_after_s is None else {"Retry-After": f"{faults.retry_after_s:g}"}
            return self.error(faults.status, "Simulated fault", headers)
        return None

    # --- routes --------------------------------------------------------------------------------------
    def route(self, path: str, handler: Handler, methods: list[str], *, authenticated: bool = True) -> Route:
        """An API route: logged, faulted, authenticated (unless told otherwise), JSON body parsed."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body: Any = json.loads(raw) if raw.strip() else None
                malformed = False
            except ValueError:
                body, malformed = raw.decode("utf-8", errors="replace"), True
            entry = {
                "method": request.method,
                "path": request.url.path,
                "query": self._redact_pairs(request.query_params.multi_items(), SECRET_QUERY_PARAMS),
                "headers": self._redact_pairs(request.headers.items(), SECRET_HEADERS),
                "body": body,
                "status": None,
                "at": time.time(),
                "done": None,
            }
            self.log.append(entry)
            response = await self._injected(request.url.path)
            if response is None:
                try:
                    if authenticated and self._authenticate is not None:
                        self._authenticate(request)
                    response = self.error(400, "Malformed JSON body") if malformed else await handler(request, body)
                except Reject as rejected:
                    response = JSONResponse(rejected.body, rejected.status)
            entry["status"], entry["done"] = response.status_code, time.time()
            return response

        return Route(path, endpoint, methods=methods)

    def _control_routes(self) -> list[BaseRoute]:
        async def inspect(request: Request) -> Response:
            return JSONResponse(self.scrub({"state": self._state(), "requests": list(self.log)}))

        async def set_faults(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                own = {key: value for key, value in body.items() if key in Faults.model_fields}
                extra = {key: value for key, value in body.items() if key not in own}
                faults = Faults.model_validate({**self.faults.model_dump(), **own})
                if extra and self._controls is None:
                    raise ValueError(f"unknown fields: {sorted(extra)}")
                view = self._controls(extra) if self._controls else {}
            except (ValueError, ValidationError) as exc:  # ValidationError is a ValueError; named for clarity
                return JSONResponse({"error": "Invalid faults", "message": str(exc)}, status_code=400)
            self.faults = faults
            if "seed" in own:
                self.rng.seed(faults.seed)
            return JSONResponse({**faults.model_dump(), **view})

        async def reset(request: Request) -> Response:
            self.faults = self._initial
            self.rng.seed(self._initial.seed)
            self.log.clear()
            self._secrets.clear()
            self._reset_state()
            return JSONResponse({})

        return [
            Route("/_inspect", inspect, methods=["GET"]),
            Route("/_faults", set_faults, methods=["POST"]),
            Route("/_reset", reset, methods=["POST"]),
        ]

    def build(self, routes: list[BaseRoute]) -> Starlette:
        """Control routes plus the provider's API routes; unknown paths answer in the provider's shape."""

        async def http_error(request: Request, exc: Exception) -> Response:
            if not isinstance(exc, HTTPException):
                raise exc
            return self.error(exc.status_code, exc.detail, dict(exc.headers or {}))

        app = Starlette(routes=[*self._control_routes(), *routes], exception_handlers={HTTPException: http_error})
        app.state.simulator = self
        return app

    def keep(self, entries: int) -> None:
        """Keep the last ``entries`` requests in the log (a long test run needs more than the default)."""
        self.log = deque(self.log, maxlen=entries)

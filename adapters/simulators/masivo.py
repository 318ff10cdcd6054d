"""Masivo storefront v1 simulator (base https://app.masivo.ai/api/storefront/v1), read from the seed docs.

Routes: ``GET /auth/authorize`` (header ``x-api-key`` → ``{"data": <JWT valid 1 h>}``), and with
``Authorization: Bearer <that JWT>``: ``PATCH``/``GET /customers/{id}/consent``, ``GET /customers/{id}``.
Errors are ``{"error", "details"}``: 401 bad or expired token, 404 customer not found, 422 invalid consent.

Extra ``POST /_faults`` controls:
  ``{"expire_tokens": true}``: every token issued so far is expired now (new ones are valid), so a test can
  prove the client re-authorizes once on 401. ``{"missing_customers": ["id", ...]}``: replaces the set of
  customer ids answering 404 (every other id exists implicitly). The answer echoes ``missing_customers``.

Decisions where the docs are silent:
- PATCH *replaces* the stored consent, purposes included. The privacy page says that once consent is
  recorded "each purpose must be explicitly true" to allow that use, so a purpose left out of a PATCH is
  not allowed; merging would invent a grant nobody sent. Clients must send the full purpose set.
  ``_inspect`` shows the effective purposes per customer (a missing purpose reads ``false``).
- Keys outside the documented consent fields or the six purposes → 422, so a misspelt field fails a
  test instead of vanishing. ``consent_timestamp`` must be an RFC 3339 date-time with an offset.
- ``consent_string`` must be an IAB TCF v2 string of any creation date, segments included
  (``^C[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$``), not the docs' ``^CO[A-Za-z0-9_-]+$``: that pattern admits only
  strings created before 2021 with one segment, so a Masivo enforcing it could accept no string made today.
- ``GET /customers/{id}`` carries ``consent: null`` while none is recorded; only ``GET .../consent`` answers
  the documented default (all purposes true). A missing customer (404) is reported before invalid data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.simulators.common import Faults, Reject, Simulator, authorization

__all__ = ["PURPOSES", "TOKEN_TTL_S", "create_app"]

PURPOSES = (
    "behavioral_campaigns",
    "coupon_campaigns",
    "punchcard_campaigns",
    "email_marketing",
    "push_notifications",
    "link_tracking",
)
TOKEN_TTL_S = 3600
CONSENT_FIELDS = frozenset({"consent_string", "version", "consent_timestamp", "customer_id", "purposes", "vendors"})
CONSENT_STRING = re.compile(r"C[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")  # any TCF v2 string, with fullmatch
CONSENT_STRING_LENGTH = (20, 500)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": HTTPStatus(status).phrase, "details": message}


def _reject(status: int, error: str, details: str) -> Reject:
    return Reject(status, {"error": error, "details": details})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _is_datetime(value: Any) -> bool:
    """RFC 3339 date-time (OpenAPI `format: date-time`): a date, a time and an offset."""
    if not isinstance(value, str) or "T" not in value.upper():
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _consent_problem(consent: Any) -> str | None:
    """What is wrong with a `consent` object per the CustomerConsentUpdate schema, or None."""
    if not isinstance(consent, dict):
        return "consent is required and must be an object"
    if unknown := sorted(set(consent) - CONSENT_FIELDS):
        return f"consent has unknown fields: {', '.join(unknown)}"
    consent_string = consent.get("consent_string")
    low, high = CONSENT_STRING_LENGTH
    if not isinstance(consent_string, str):
        return "consent.consent_string is required and must be a string"
    if not low <= len(consent_string) <= high:
        return f"consent.consent_string must be {low} to {high} characters long"
    if not CONSENT_STRING.fullmatch(consent_string):
        return "consent.consent_string must match ^C[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$"
    for field in ("version", "customer_id"):
        if field in consent and not isinstance(consent[field], str):
            return f"consent.{field} must be a string"
    if "consent_timestamp" in consent and not _is_datetime(consent["consent_timestamp"]):
        return "consent.consent_timestamp must be an ISO 8601 date-time with an offset"
    purposes = consent.get("purposes", {})
    if not isinstance(purposes, dict):
        return "consent.purposes must be an object"
    if unknown := sorted(set(purposes) - set(PURPOSES)):
        return f"consent.purposes has unknown purposes: {', '.join(unknown)}"
    vendors = consent.get("vendors", {})
    if not isinstance(vendors, dict):
        return "consent.vendors must be an object"
    for group, mapping in (("purposes", purposes), ("vendors", vendors)):
        for key, value in mapping.items():
            if not isinstance(value, bool):
                return f"consent.{group}.{key} must be a boolean"
    return None


class _Controls(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    expire_tokens: bool = False
    missing_customers: list[str] | None = None


class _Masivo:
    """State and handlers of one Masivo simulator."""

    def __init__(self, faults: Faults | None, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.signing_key = secrets.token_bytes(32)
        self.tokens: dict[str, float] = {}  # issued token → expiry (simulator clock)
        self.consents: dict[str, dict[str, Any]] = {}
        self.missing: set[str] = set()
        self.sim = Simulator(
            faults=faults,
            error_body=_error_body,
            state=self.snapshot,
            reset=self.reset,
            authenticate=self.authenticate,
            controls=self.control,
        )

    def reset(self) -> None:
        self.tokens.clear()
        self.consents.clear()
        self.missing.clear()

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "consents": self.consents,
            "effective_purposes": {
                customer: {name: consent.get("purposes", {}).get(name) is True for name in PURPOSES}
                for customer, consent in self.consents.items()
            },
            "missing_customers": sorted(self.missing),
            "tokens": {"issued": len(self.tokens), "valid": sum(exp > now for exp in self.tokens.values())},
        }

    def control(self, extra: dict[str, Any]) -> dict[str, Any]:
        controls = _Controls.model_validate(extra)
        if controls.expire_tokens:
            self.tokens = dict.fromkeys(self.tokens, float("-inf"))
        if controls.missing_customers is not None:
            self.missing = set(controls.missing_customers)
        return {"missing_customers": sorted(self.missing)}

    def authenticate(self, request: Request) -> None:
        auth = authorization(request)
        if auth is None or auth[0] != "bearer":
            raise _reject(401, "Unauthorized", "Missing bearer token; call /auth/authorize first")
        expiry = self.tokens.get(auth[1])
        if expiry is None:
            raise _reject(401, "Unauthorized", "Invalid token")
        if self.clock() >= expiry:
            raise _reject(401, "Unauthorized", "Token expired")

    def issue_token(self) -> str:
        """An HS256 JWT; validity is checked against the simulator's own record of it, by its clock."""
        now = self.clock()
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "iss": "masivo-simulator",
            "iat": int(now),
            "exp": int(now) + TOKEN_TTL_S,
            "jti": secrets.token_hex(8),
        }
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = hmac.new(self.signing_key, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64url(signature)}"
        self.tokens[token] = now + TOKEN_TTL_S
        self.sim.remember_secret(token)
        return token

    def customer_id(self, request: Request) -> str:
        customer = str(request.path_params["id"])
        if customer in self.missing:
            raise _reject(404, "Customer not found", f"No customer with id {customer!r}")
        return customer

    def consent_or_default(self, customer: str) -> dict[str, Any]:
        """The docs: "If consent is null or empty... returns default values with all purposes true"."""
        return self.consents.get(customer) or {
            "customer_id": customer,
            "purposes": dict.fromkeys(PURPOSES, True),
        }

    # --- handlers ------------------------------------------------------------------------------------
    async def authorize(self, request: Request, body: Any) -> Response:
        api_key = request.headers.get("x-api-key", "").strip()
        if not api_key:
            raise _reject(401, "Unauthorized", "Missing x-api-key header")
        return JSONResponse({"data": self.issue_token()})

    async def patch_consent(self, request: Request, body: Any) -> Response:
        customer = self.customer_id(request)
        consent = body.get("consent") if isinstance(body, dict) else None
        if problem := _consent_problem(consent):
            raise _reject(422, "Invalid consent data", problem)
        assert isinstance(consent, dict)  # _consent_problem() said so; narrows the type
        self.consents[customer] = consent
        return JSONResponse({"data": {"consent": consent}})

    async def get_consent(self, request: Request, body: Any) -> Response:
        return JSONResponse({"data": {"consent": self.consent_or_default(self.customer_id(request))}})

    async def get_customer(self, request: Request, body: Any) -> Response:
        customer = self.customer_id(request)
        return JSONResponse(
            {"data": {"customer": {"id": customer, "consent": self.consents.get(customer)}, "wallet": {}}}
        )


def create_app(faults: Faults | None = None, *, clock: Callable[[], float] = time.time) -> Starlette:
    """A Masivo simulator; `clock` decides token expiry so tests can move time instead of sleeping."""
    masivo = _Masivo(faults, clock)
    sim = masivo.sim
    return sim.build(
        [
            sim.route("/auth/authorize", masivo.authorize, ["GET"], authenticated=False),
            sim.route("/customers/{id}/consent", masivo.patch_consent, ["PATCH"]),
            sim.route("/customers/{id}/consent", masivo.get_consent, ["GET"]),
            sim.route("/customers/{id}", masivo.get_customer, ["GET"]),
        ]
    )

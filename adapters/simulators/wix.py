"""Wix Marketing Consent simulator, under base https://www.wixapis.com, at the paths the Wix JS SDK uses.

Routes under ``/marketing-consent/v1/marketing-consent``: ``POST ""`` create, ``GET /{id}``, ``GET /get-by``,
``POST /query``, ``POST /upsert``, ``PATCH /{id}`` update, ``POST /remove``, ``DELETE /{id}``; and
``POST /marketing-consent/v1/bulk/marketing-consent/upsert`` with ``{"info": [MarketingConsent, …]}``: each item
upserted by the single upsert's rules, answered ``{"results": [{"originalIndex", "marketingConsent", "link"?} |
{"originalIndex", "error"}], "metadata": {"totalSuccess", "totalFailure"}}`` (a failing item fails alone; more
than the simulator's ``bulk_max`` items, or none, is a 400 for the whole call).
Auth: ``Authorization: <API key>`` (no scheme word) plus ``wix-site-id``, or
``Authorization: <scheme> <token>``.
Validation errors → 400 ``{message, details.validationError.fieldViolations[]}``; application errors (401,
404, 409) → ``{message, details.applicationError{code, description}}``; injected 5xx have an empty body, as
Wix system errors do. The rules themselves live in `wix_rules`.

Extra ``POST /_faults`` control: ``{"refused_addresses": ["email or phone", ...]}`` replaces the addresses
whose upsert (single, or one bulk item) is refused with a 400 field violation, as Wix refuses an address its
own checks reject: one bulk item fails while the others land, whatever the client's own checks said. The
answer echoes ``refused_addresses``.

Webhooks (``create_app(webhooks=Webhooks(url=…))`` or ``events_url=``; see `wix_webhooks`): every change
is announced as Wix does: a create (or an upsert creating) → created; a write that changes the consent
(upsert, bulk item, update, remove) → updated, none when nothing changed; DELETE → deleted. The test-only
control route ``POST /_anonymize`` with ``{"email"}`` or ``{"phone"}`` deletes that address's consent as
Wix's GDPR anonymize does (a deleted event with ``triggeredByAnonymizeRequest``); 404 if there is none.
``GET /_inspect`` shows the sender's counters under ``state.webhooks``.

Decisions where the docs are silent or disagree:
- Updatable: state, lastConfirmationActivity, lastRevokeActivity (else REVOKED could never be reached by
  Update), extendedFields. Update without a mask (the JS SDK sends none) changes the updatable fields
  present in the body; an empty mask means the same.
  A masked path absent from the body clears that field (field-mask semantics); ``state`` in the mask with
  no ``state`` in the body → 400. ``details`` must name the consent's own identifier (they are not updatable).
- The state/activity rules are checked on the entity as it would be stored, so the update example in the
  docs (REVOKED with only a confirmation activity) passes only if a revoke activity is already stored.
- ``revision`` increases by one on every write that changes the entity; a write that changes nothing (e.g.
  the ignored EMAIL → UNKNOWN_STATE) keeps it. Upsert ignores any ``revision`` sent.
- Remove of an identifier with no consent → 404. Remove answers ``{marketingConsent}``.
- Eligibility: granted for CONFIRMED, and for EMAIL in NEVER_CONFIRMED/UNKNOWN_STATE; ``reason`` is the
  state name (Wix's reason values are undocumented).
- Query: filter fields details.email / details.phone / state with a value, ``$eq`` or ``$in``; sort on those
  fields or createdDate/updatedDate; default limit 50; the cursor is opaque.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.simulators.common import Faults, Reject, Simulator, authorization
from adapters.simulators.wix_rules import (
    OPTIONAL_FIELDS,
    UPDATABLE,
    Violations,
    check_details,
    check_fields,
    check_rules,
    consent_request,
    copy_path,
    eligibility,
    identifier,
    mask_paths,
    parse_revision,
    request_object,
    run_query,
)
from adapters.simulators.wix_webhooks import Sender, Webhooks

__all__ = ["BASE_PATH", "BULK_UPSERT", "STALE_REVISION", "create_app"]

BASE_PATH = "/marketing-consent/v1/marketing-consent"
BULK_UPSERT = "/marketing-consent/v1/bulk/marketing-consent/upsert"
BULK_MAX = 100  # Wix documents no maximum; the simulator's own, settable with create_app(bulk_max=)
STALE_REVISION = "entity has already changed since the requested revision"
APPLICATION_CODES = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
}


def _application_error(status: int, code: str, message: str) -> Reject:
    return Reject(status, {"message": message, "details": {"applicationError": {"code": code, "description": message}}})


def _error_body(status: int, message: str) -> dict[str, Any] | None:
    if status >= 500:
        return None  # "System errors have an empty body"
    code = APPLICATION_CODES.get(status, HTTPStatus(status).name)
    return _application_error(status, code, message).body


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Controls(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    refused_addresses: list[str] | None = None


class _Wix:
    """State and handlers of one Wix simulator."""

    def __init__(
        self, faults: Faults | None, clock: Callable[[], float], bulk_max: int, webhooks: Webhooks | None
    ) -> None:
        self.bulk_max = bulk_max
        self.clock = clock
        self.consents: dict[str, dict[str, Any]] = {}
        self.by_identifier: dict[tuple[str, str], str] = {}
        self.events = None if webhooks is None else Sender(webhooks, clock)
        self.refused: set[str] = set()  # addresses (lower case) whose upsert is refused: a fault
        self.sim = Simulator(
            faults=faults,
            error_body=_error_body,
            state=self.state,
            reset=self.reset,
            authenticate=self.authenticate,
            controls=self.control,
        )

    def state(self) -> dict[str, Any]:
        shown = {"consents": self.consents, "refused_addresses": sorted(self.refused)}
        return shown if self.events is None else shown | {"webhooks": self.events.view()}

    def reset(self) -> None:
        self.consents.clear()
        self.by_identifier.clear()
        self.refused.clear()
        if self.events is not None:
            self.events.reset()

    def announce(self, slug: str, entity: dict[str, Any], *, anonymized: bool = False) -> None:
        """Queue a webhook about a change (nothing without webhooks)."""
        if self.events is not None:
            self.events.emit(slug, entity, _iso(self.clock()), anonymized=anonymized)

    def control(self, extra: dict[str, Any]) -> dict[str, Any]:
        controls = _Controls.model_validate(extra)
        if controls.refused_addresses is not None:
            self.refused = {address.lower() for address in controls.refused_addresses}
        return {"refused_addresses": sorted(self.refused)}

    def authenticate(self, request: Request) -> None:
        auth = authorization(request)
        if auth is None:
            raise _application_error(401, "UNAUTHENTICATED", "Missing Authorization header")
        if auth[0] == "" and not request.headers.get("wix-site-id", "").strip():
            raise _application_error(401, "UNAUTHENTICATED", "An API key needs a wix-site-id header")

    def find(self, consent_id: str) -> dict[str, Any]:
        entity = self.consents.get(consent_id)
        if entity is None:
            raise _application_error(404, "NOT_FOUND", f"Marketing consent {consent_id} not found")
        return entity

    def find_by(self, details: dict[str, Any]) -> dict[str, Any] | None:
        consent_id = self.by_identifier.get(identifier(details))
        return None if consent_id is None else self.consents[consent_id]

    def insert(self, consent: dict[str, Any], state: str) -> dict[str, Any]:
        details = consent["details"]
        now, kind = _iso(self.clock()), details["type"]
        own = "email" if kind == "EMAIL" else "phone"
        entity: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "revision": "1",
            "details": {"type": kind, own: details[own]},
            "state": state,
            "createdDate": now,
            "updatedDate": now,
        }
        entity.update({field: copy.deepcopy(consent[field]) for field in OPTIONAL_FIELDS if field in consent})
        self.consents[entity["id"]] = entity
        self.by_identifier[identifier(entity["details"])] = entity["id"]
        self.announce("created", entity)
        return entity

    def save(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if new != old:
            new["revision"] = str(int(old["revision"]) + 1)
            new["updatedDate"] = _iso(self.clock())
            self.consents[new["id"]] = new
            self.announce("updated", new)
        return self.consents[new["id"]]

    def drop(self, entity: dict[str, Any], *, anonymized: bool = False) -> None:
        del self.consents[entity["id"]]
        del self.by_identifier[identifier(entity["details"])]
        self.announce("deleted", entity, anonymized=anonymized)

    def write(self, entity: dict[str, Any], consent: dict[str, Any], paths: list[str] | None) -> dict[str, Any]:
        """Apply an update or upsert to an existing consent, check the result, store it."""
        new = copy.deepcopy(entity)
        for path in paths if paths is not None else [field for field in UPDATABLE if field in consent]:
            copy_path(consent, new, path.split("."))
        if entity["details"]["type"] == "EMAIL" and new.get("state") == "UNKNOWN_STATE":
            new["state"] = entity["state"]  # the docs: "Trying to do so maintains the current state"
        out = Violations()
        check_rules(new, "marketingConsent.", out)
        out.raise_any()
        return self.save(entity, new)

    # --- handlers ------------------------------------------------------------------------------------
    async def create(self, request: Request, body: Any) -> Response:
        consent, out = consent_request(body)
        if not consent.get("lastConfirmationActivity"):
            out.add("marketingConsent.lastConfirmationActivity", "is required", "REQUIRED_FIELD")
        out.raise_any()
        if self.find_by(consent["details"]) is not None:
            raise _application_error(409, "ALREADY_EXISTS", "A marketing consent for this identifier already exists")
        return JSONResponse({"marketingConsent": self.insert(consent, "CONFIRMED")})  # Create always confirms

    async def get(self, request: Request, body: Any) -> Response:
        return JSONResponse({"marketingConsent": self.find(request.path_params["id"])})

    async def get_by(self, request: Request, body: Any) -> Response:
        details = {key: request.query_params.get(key) for key in ("type", "email", "phone")}
        out = Violations()
        check_details(details, "", out)
        out.raise_any()
        entity = self.find_by(details)
        if entity is None:
            raise _application_error(404, "NOT_FOUND", "No marketing consent for this identifier")
        return JSONResponse({"marketingConsent": entity, "communicationEligibility": eligibility(entity)})

    async def query(self, request: Request, body: Any) -> Response:
        return JSONResponse(run_query(request_object(body, "query"), self.consents.values()))

    async def upsert(self, request: Request, body: Any) -> Response:
        return JSONResponse(self.upsert_one(body))

    async def bulk_upsert(self, request: Request, body: Any) -> Response:
        """Each item upserted on its own, by the single upsert's rules; a failing item fails alone."""
        items, out = body.get("info") if isinstance(body, dict) else None, Violations()
        if not isinstance(items, list) or not items:
            out.add("info", "must be a non-empty list of marketing consents", "REQUIRED_FIELD")
        elif len(items) > self.bulk_max:
            out.add("info", f"must have at most {self.bulk_max} items", "MAX_SIZE")
        out.raise_any()
        assert isinstance(items, list)
        results = [self._bulk_item(index, item) for index, item in enumerate(items)]
        failed = sum("error" in result for result in results)
        metadata = {"totalSuccess": len(results) - failed, "totalFailure": failed}
        return JSONResponse({"results": results, "metadata": metadata})

    def _bulk_item(self, index: int, item: Any) -> dict[str, Any]:
        try:
            return {"originalIndex": index, **self.upsert_one({"marketingConsent": item})}
        except Reject as refused:
            return {"originalIndex": index, "error": refused.body or {"message": HTTPStatus(refused.status).phrase}}

    def upsert_one(self, body: Any) -> dict[str, Any]:
        consent, out = consent_request(body)
        if "state" not in consent:
            out.add("marketingConsent.state", "is required", "REQUIRED_FIELD")
        out.raise_any()
        kind, address = identifier(consent["details"])
        if address in self.refused:
            field = f"marketingConsent.details.{kind.lower()}"
            out.add(field, "is refused for this site (simulated fault)", "OTHER", "REFUSED_ADDRESS")
            out.raise_any()
        existing = self.find_by(consent["details"])
        if existing is None:
            check_rules(consent, "marketingConsent.", out)
            out.raise_any()
            entity = self.insert(consent, consent["state"])
        else:
            entity = self.write(existing, consent, None)
        answer: dict[str, Any] = {"marketingConsent": entity}
        if entity["state"] == "PENDING":  # the rules make PENDING imply DOUBLE_CONFIRMATION
            token = secrets.token_urlsafe(24)
            answer["link"] = {
                "type": "CONFIRMATION",
                "url": f"https://sim.wix/_manage-consent/subscribe?token={token}",
            }
        return answer

    async def update(self, request: Request, body: Any) -> Response:
        consent_id = request.path_params["id"]
        consent, out = consent_request(body)
        if consent.get("id", consent_id) != consent_id:
            out.add("marketingConsent.id", "must match the id in the path", "OTHER", "ID_MISMATCH")
        paths = mask_paths(body.get("mask"), out)
        if paths is not None and "state" in paths and "state" not in consent:
            out.add("marketingConsent.state", "is required when the mask names it", "REQUIRED_FIELD")
        revision = parse_revision(consent.get("revision"), out)
        out.raise_any()
        entity = self.find(consent_id)
        if identifier(consent["details"]) != identifier(entity["details"]):
            out.add("marketingConsent.details", "must match the consent's identifier (not updatable)", "OTHER")
            out.raise_any()
        if revision is not None and revision != int(entity["revision"]):
            raise _application_error(409, "REVISION_MISMATCH", STALE_REVISION)
        return JSONResponse({"marketingConsent": self.write(entity, consent, paths)})

    async def remove(self, request: Request, body: Any) -> Response:
        out = Violations()
        revoke = request_object(body, "lastRevokeActivity")
        check_details(body.get("details"), "details.", out)
        check_fields({"lastRevokeActivity": revoke}, "", out)
        out.raise_any()
        entity = self.find_by(body["details"])
        if entity is None:
            raise _application_error(404, "NOT_FOUND", "No marketing consent for this identifier")
        revoked = {"state": "REVOKED", "lastRevokeActivity": revoke}
        return JSONResponse({"marketingConsent": self.write(entity, revoked, None)})

    async def delete(self, request: Request, body: Any) -> Response:
        self.drop(self.find(request.path_params["id"]))
        return JSONResponse({})

    async def anonymize(self, request: Request) -> Response:
        """Control route (never faulted or logged): Wix's GDPR anonymize deletes the address's consent."""
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return self.sim.error(400, "Malformed JSON body")
        address = body if isinstance(body, dict) else {}
        details = {"type": "PHONE" if "phone" in address else "EMAIL", **address}
        out = Violations()
        check_details(details, "", out)
        try:
            out.raise_any()
            entity = self.find_by(details)
            if entity is None:
                raise _application_error(404, "NOT_FOUND", "No marketing consent for this identifier")
        except Reject as rejected:
            return JSONResponse(rejected.body, rejected.status)
        self.drop(entity, anonymized=True)
        return JSONResponse({"id": entity["id"]})


def create_app(
    faults: Faults | None = None,
    *,
    clock: Callable[[], float] = time.time,
    bulk_max: int = BULK_MAX,
    webhooks: Webhooks | None = None,
    events_url: str | None = None,
) -> Starlette:
    """A Wix marketing-consent simulator; ``clock`` stamps createdDate and updatedDate; a bulk
    upsert of more than ``bulk_max`` items is refused (400) whole. ``webhooks`` sends every change as a
    signed webhook; ``events_url`` is the same with the test defaults (what ``serve --demo`` asks any
    provider's simulator for); with neither, nothing is sent."""
    if webhooks is None and events_url is not None:
        webhooks = Webhooks(url=events_url)
    wix = _Wix(faults, clock, bulk_max, webhooks)
    sim, base = wix.sim, BASE_PATH
    app = sim.build(
        [
            Route("/_anonymize", wix.anonymize, methods=["POST"]),
            sim.route(base, wix.create, ["POST"]),
            sim.route(f"{base}/get-by", wix.get_by, ["GET"]),
            sim.route(f"{base}/query", wix.query, ["POST"]),
            sim.route(f"{base}/upsert", wix.upsert, ["POST"]),
            sim.route(BULK_UPSERT, wix.bulk_upsert, ["POST"]),
            sim.route(f"{base}/remove", wix.remove, ["POST"]),
            sim.route(f"{base}/{{id}}", wix.get, ["GET"]),
            sim.route(f"{base}/{{id}}", wix.update, ["PATCH"]),
            sim.route(f"{base}/{{id}}", wix.delete, ["DELETE"]),
        ]
    )
    app.state.webhooks = wix.events  # the Sender (its idle() for tests), or None
    return app

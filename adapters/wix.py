"""Wix Marketing Consent: one consent per channel (EMAIL, PHONE) and address.

One push may take several calls, so it is a sans-IO flow (see ``adapters.base``). Per
channel whose projection changed:

- consent known from the memo → PATCH it with its ``revision`` and a field mask; on 409
  ("entity has already changed since the requested revision") GET it, copy the
  ``revision`` and PATCH once more; 404 (deleted at Wix) → as on a first sync;
- first sync → GET ``get-by`` the address; found → PATCH as above; 404 → Upsert.

First syncs of several subjects together go as one bulk upsert instead (``push_many``): an item per
channel, ``bulk_size`` items a request, each item's result mapped back by its ``originalIndex``.

Create is never used: it "always sets CONFIRMED", and a second Create for one address fails.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Collection, Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from adapters.base import (
    Ack,
    Adapter,
    Bulk,
    BulkFlow,
    EventSource,
    Flow,
    Observable,
    Observation,
    Projection,
    ProviderEvent,
    ProviderSettings,
    ReadFlow,
    UnreadableEvent,
    Unverified,
    Write,
    json_body,
    json_request,
    validation_reason,
)
from adapters.errors import LocalValidationError, PermanentError, ProviderError, TransientError
from adapters.registry import Provider
from schemas.consent import PurposeState, SubjectState, most_restrictive
from schemas.wix import (
    CONSENT_ENTITY,
    EVENT_SLUGS,
    MAX_PAGE,
    BulkUpsertRequest,
    BulkUpsertResponse,
    BulkUpsertResult,
    ConsentEvent,
    ConsentState,
    ErrorBody,
    GetByResponse,
    GetResponse,
    IdentifierType,
    OptInLevel,
    QueryRequest,
    QueryResponse,
    RemoveRequest,
    StoredConsent,
    UpdateRequest,
    UpsertRequest,
    UpsertResponse,
    WebhookData,
    received,
)

CONSENTS: Final = "/marketing-consent/v1/marketing-consent"
BULK_UPSERT: Final = "/marketing-consent/v1/bulk/marketing-consent/upsert"

WIX_STATE: Final = {
    PurposeState.granted: ConsentState.CONFIRMED,
    PurposeState.denied: ConsentState.REVOKED,
    PurposeState.pending: ConsentState.PENDING,
}
ADOPTED: Final = {wix: ours for ours, wix in WIX_STATE.items()}

ACTIVITY: Final = {
    ConsentState.CONFIRMED: "lastConfirmationActivity",
    ConsentState.PENDING: "lastConfirmationActivity",
    ConsentState.REVOKED: "lastRevokeActivity",
}
"""The activity Wix requires for each state we send ("PENDING or CONFIRMED … REVOKED …")."""

OPT_IN_LEVEL: Final = {
    ConsentState.CONFIRMED: OptInLevel.SINGLE_CONFIRMATION,
    ConsentState.PENDING: OptInLevel.DOUBLE_CONFIRMATION,  # "PENDING: relevant only for DOUBLE_CONFIRMATION"
}

WIX_SOURCE: Final = {"in_person": "IN_PERSON", "form": "FORM", "web": "FORM"}
"""Decision source → Wix activity source (a name both Wix source enums share); others are OTHER."""

IDENTIFIER: Final = {IdentifierType.EMAIL: "email", IdentifierType.PHONE: "phone"}
"""The subject field, and the ``details`` field, that addresses each channel."""

DEFAULT_PURPOSES: Final = {"email_marketing": "EMAIL", "sms_marketing": "PHONE"}

NOT_FOUND: Final = frozenset({404})  # no consent for that address or id (yet): the flow upserts
WITHDRAWN: Final = "withdrawn"  # memo: the subject's former addresses whose consent was revoked
WEBHOOK_LEEWAY_S: Final = 60  # a webhook token this long past its exp is still Wix's (clocks differ)
STALE: Final = 409  # "entity has already changed since the requested revision": the flow re-reads
TRANSIENT_CODES: Final = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"})
"""Application error codes of a bulk item worth retrying (Wix's 429 and 5xx counterparts)."""

Model = TypeVar("Model", bound=BaseModel)
Step = Generator[httpx.Request, httpx.Response, StoredConsent]


class WixSettings(ProviderSettings):
    api_key: SecretStr
    site_id: str = Field(min_length=1)
    base_url: str = "https://www.wixapis.com"
    purposes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PURPOSES), description="gateway purpose -> Wix channel"
    )
    # "200 requests per minute per app instance" (Wix API rate limits).
    rate_per_minute: float = Field(default=200.0, ge=0)
    webhook_public_key: str | None = Field(
        default=None, description="the app's public key (PEM) from the Wix dashboard: verifies its webhooks"
    )
    instance_id: str | None = Field(
        default=None, description="the app instance id Wix names in webhooks; unset: site_id"
    )

    @field_validator("webhook_public_key")
    @classmethod
    def _rsa_public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            key = load_pem_public_key(value.encode())
        except ValueError:
            key = None
        if not isinstance(key, RSAPublicKey):
            raise ValueError("must be an RSA public key in PEM form (Wix signs webhooks with RS256)")
        return value

    bulk_size: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="items per bulk upsert of first syncs (Wix documents no maximum: 100 is conservative); "
        "0: off, every push alone",
    )

    @field_validator("purposes")
    @classmethod
    def _wix_channels(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(IDENTIFIER))
        if unknown:
            raise ValueError(f"Wix channels are EMAIL and PHONE, not {', '.join(unknown)}")
        return value


class WixAuth(httpx.Auth):
    """API-key auth as the Wix SDK sends it: ``Authorization: <API key>`` (no "Bearer") + ``wix-site-id``."""

    def __init__(self, api_key: SecretStr, site_id: str) -> None:
        self._api_key = api_key
        self._site_id = site_id

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._api_key.get_secret_value()
        request.headers["wix-site-id"] = self._site_id
        yield request


class WixAdapter(Adapter, Observable, Bulk, EventSource):
    name: ClassVar[str] = "wix"
    Settings: ClassVar[type[ProviderSettings]] = WixSettings
    volatile: ClassVar[tuple[str, ...]] = ("updatedDate",)
    settings: WixSettings
    read_batch: ClassVar[int] = MAX_PAGE  # one query page per channel covers a batch

    def auth(self) -> httpx.Auth:
        return WixAuth(self.settings.api_key, self.settings.site_id)

    def addressed(self) -> dict[str, str]:
        return {term: IDENTIFIER[IdentifierType(term)] for term in sorted(set(self.settings.purposes.values()))}

    def project(self, state: SubjectState) -> Projection:
        """``{"EMAIL": {"state": "CONFIRMED", "email": …}, "PHONE": {…}}`` for the mapped channels
        the subject decided and has an address for (a consent exists "per email or phone").

        Wix keeps one consent per address, so where other subjects hold the same address their
        decisions count too: the most protective state of them all (a denial by anyone wins).
        The address is part of the projection so a changed address is pushed too.
        """
        projection: Projection = {}
        for term in state.records_in(self.settings.purposes):
            field = IDENTIFIER[IdentifierType(term)]
            address = _address(state, field)
            if address is not None:
                states = [record.state for record in state.term_records(self.settings.purposes, term, field)]
                projection[term] = {"state": WIX_STATE[most_restrictive(states)].value, field: address}
        return projection

    def not_applicable(self, state: SubjectState) -> dict[str, str]:
        """Decided channels the subject has no address for: Wix cannot hold such a consent."""
        return {
            term: f"the subject has no {IDENTIFIER[IdentifierType(term)]}"
            for term in state.purposes_in(self.settings.purposes)
            if getattr(state, IDENTIFIER[IdentifierType(term)]) is None
        }

    def push(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> Flow:
        """Each channel whose consent changed, then the consent of every address the subject left
        (revoked once: an address it no longer has must not keep its opt-in)."""
        desired = self.project(state)
        bodies = self._bodies(state, desired, previous)
        done = set(memo.get(WITHDRAWN, ())) - {
            target.get("email") or target.get("phone") for target in desired.values()
        }
        withdrawals = {key: body for key, body in self._withdrawals(state).items() if key not in done}
        remembered = dict(memo)
        for channel, body in bodies.items():
            consent = yield from self._sync(body, self._known(channel, desired, previous, memo), _writes(body))
            remembered[channel] = _remembered(consent)
        for key, body in withdrawals.items():
            revoked = yield json_request("POST", f"{CONSENTS}/remove", body, expect=NOT_FOUND)
            if revoked.status_code not in NOT_FOUND:
                self.check(revoked)
            done.add(key)
        if done:
            remembered[WITHDRAWN] = sorted(done)
        return Ack(acknowledged=desired, memo=remembered)

    def _bodies(self, state: SubjectState, desired: Projection, previous: Projection) -> dict[str, dict[str, Any]]:
        """The upsert body of each channel whose consent changed. Every body is built and checked before
        the first request, so a rule broken on one channel leaves the other untouched too."""
        return {
            channel: self._upsert_body(state, channel, target)
            for channel, target in desired.items()
            if previous.get(channel) != target
        }

    @property
    def bulk_size(self) -> int:
        return self.settings.bulk_size

    def first_sync(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> bool:
        """Nothing acknowledged, no consent id remembered, no former address to withdraw: the single push
        would look each address up and PATCH or upsert it, and a bulk upsert by address sets the same."""
        known = any(isinstance(memo.get(channel), Mapping) for channel in self.addressed())
        return not previous and not known and not any(state.former.values())

    def push_many(self, states: Sequence[SubjectState]) -> BulkFlow:
        """Each subject's channels as bulk upsert items, ``bulk_size`` a request. A subject is acknowledged
        when all its items are, else it fails with its first item's error: its delivery is retried alone,
        by the single push (lookup, then PATCH at the revision), which is idempotent."""
        items: list[tuple[int, dict[str, Any]]] = []
        failed: dict[int, ProviderError] = {}
        for index, state in enumerate(states):
            try:
                items += [(index, body) for body in self._bodies(state, self.project(state), {}).values()]
            except LocalValidationError as error:
                failed[index] = error
        stored: dict[int, dict[str, Any]] = defaultdict(dict)
        for start in range(0, len(items), self.bulk_size):
            chunk = items[start : start + self.bulk_size]
            results = yield from self._bulk_upsert(chunk)
            for (index, body), result in zip(chunk, results, strict=True):
                if isinstance(result, ProviderError):
                    failed.setdefault(index, result)
                else:
                    stored[index][body["marketingConsent"]["details"]["type"]] = _remembered(result)
        return [
            failed[index] if index in failed else Ack(acknowledged=self.project(state), memo=stored[index])
            for index, state in enumerate(states)
        ]

    def _bulk_upsert(
        self, chunk: Sequence[tuple[int, dict[str, Any]]]
    ) -> Generator[httpx.Request, httpx.Response, list[StoredConsent | ProviderError]]:
        """One bulk request: each item's consent or error, by its ``originalIndex``. A call failed or
        refused whole says nothing of any one item: each gets a TransientError, so it is retried alone."""
        writes: dict[int, dict[str, Write]] = defaultdict(dict)
        for index, body in chunk:
            writes[index] |= _writes(body)
        info = [body["marketingConsent"] for _, body in chunk]
        request = json_request("POST", BULK_UPSERT, self._body(BulkUpsertRequest, {"info": info}), item_writes=writes)
        try:
            answer = self._read((yield request), BulkUpsertResponse)
        except ProviderError as error:
            whole = TransientError(self.name, f"the bulk upsert failed whole: {error.message}", error.status_code)
            return [error if isinstance(error, TransientError) else whole] * len(chunk)
        results = {result.originalIndex: result for result in answer.results}
        return [self._item(results.get(position)) for position in range(len(chunk))]

    def _item(self, result: BulkUpsertResult | None) -> StoredConsent | ProviderError:
        """One bulk item's consent, or its error: a validation error or another application error is
        permanent, a transient code or an error that names no code (nothing says a retry cannot help) is not."""
        if result is None:
            return TransientError(self.name, "the bulk upsert answered nothing for this item")
        if result.error is None and result.marketingConsent is not None:
            return result.marketingConsent
        error = result.error or ErrorBody()
        text = _error_text(error) or "the bulk upsert failed this item and gave no reason"
        details = error.details
        if details is not None and details.validationError is not None:
            return PermanentError(self.name, text)
        code = details.applicationError.code if details is not None and details.applicationError else None
        if code is None or code in TRANSIENT_CODES:
            return TransientError(self.name, text)
        return PermanentError(self.name, text)

    def _withdrawals(self, state: SubjectState) -> dict[str, dict[str, Any]]:
        """A revoke for each former address of a mapped channel, dated when the subject left it."""
        bodies = {}
        for channel, field in self.addressed().items():
            for former in state.former.get(field, ()):
                activity = {"source": "OTHER", "description": "no longer the subject's address"}
                revoke = activity | {"updatedDate": former.replaced_at.astimezone(UTC)}
                body = {"details": {"type": channel, field: former.address}, "lastRevokeActivity": revoke}
                bodies[former.address] = self._body(RemoveRequest, body)
        return bodies

    def erase(self, state: SubjectState, memo: Mapping[str, Any]) -> Flow:
        """Wix can delete a consent: that of every address the subject has or had, found by address,
        except one another subject holds now (its consent is theirs too: they get pushed again).
        One already gone (404) is as good as deleted."""
        for channel, field in self.addressed().items():
            current = _address(state, field)
            addresses = [former.address for former in state.former.get(field, ())]
            if current is not None and not state.shared.get(field):
                addresses.insert(0, current)
            for address in addresses:
                existing = yield from self._lookup({"type": channel, field: address})
                if existing is not None:
                    deleted = yield json_request("DELETE", _consent_path(existing.id), expect=NOT_FOUND)
                    if deleted.status_code not in NOT_FOUND:
                        self.check(deleted)
        return Ack(acknowledged={}, memo={})

    def _lookup(self, details: Mapping[str, Any]) -> Generator[httpx.Request, httpx.Response, StoredConsent | None]:
        """The consent Wix holds for an address, or None. Official SDK: GET …/get-by?type=EMAIL&email=…
        (the REST page "renders wrong")."""
        found = yield json_request("GET", f"{CONSENTS}/get-by", params=details, expect=NOT_FOUND)
        if found.status_code in NOT_FOUND:
            return None
        return self._read(found, GetByResponse).marketingConsent

    def read(self, states: Sequence[SubjectState]) -> ReadFlow:
        """Query the batch's consents channel by channel (``$in`` on the addresses, ≤ 100 per page,
        following the cursor), so a run over many subjects costs pages, not a request each."""
        found: dict[tuple[str, str], StoredConsent] = {}
        for channel in sorted({IdentifierType(term) for term in self.settings.purposes.values()}):
            field = IDENTIFIER[channel]
            addresses = sorted({address for state in states if (address := _address(state, field))})
            cursor: str | None = None
            while addresses:
                paging: dict[str, Any] = {"limit": MAX_PAGE} | ({"cursor": cursor} if cursor else {})
                query = {"filter": {f"details.{field}": {"$in": addresses}}, "cursorPaging": paging}
                answer = yield json_request("POST", f"{CONSENTS}/query", self._body(QueryRequest, {"query": query}))
                page = self._read(answer, QueryResponse)
                for consent in page.marketingConsent:
                    found[(channel, (getattr(consent.details, field) or "").lower())] = consent
                cursor = page.next_cursor
                if cursor is None:
                    break
        return {state.subject_id: self._observed(state, found) for state in states}

    def _observed(self, state: SubjectState, found: Mapping[tuple[str, str], StoredConsent]) -> Observation:
        held: Projection = {}
        changed_at: dict[str, datetime] = {}
        for channel in self.project(state) | dict.fromkeys(self.not_applicable(state)):
            field = IDENTIFIER[IdentifierType(channel)]
            consent = found.get((channel, (_address(state, field) or "").lower()))
            if consent is not None:
                held[channel] = {"state": consent.state.value, field: _address(state, field)}
                changed_at[channel] = _changed_at(consent)
        return Observation(held=held, changed_at=changed_at)

    def term_states(self, projection: Projection) -> dict[str, PurposeState]:
        """EMAIL/PHONE as gateway states: REVOKED is denied, CONFIRMED granted, PENDING pending;
        NEVER_CONFIRMED and UNKNOWN_STATE say nothing the gateway could adopt."""
        return {
            channel: ADOPTED[ConsentState(value["state"])]
            for channel, value in projection.items()
            if ConsentState(value["state"]) in ADOPTED
        }

    def events(self, body: bytes, headers: Mapping[str, str], now: datetime) -> list[ProviderEvent]:
        """A webhook's consent event, verified: the body is a JWT signed RS256 with the app's key (the
        algorithm pinned, never taken from the token), unexpired, for this site's app instance.
        Another entity's event is no news here: none."""
        claims = self._verified(body, now)
        try:
            envelope = WebhookData.model_validate_json(claims["data"])
            if envelope.instanceId != (self.settings.instance_id or self.settings.site_id):
                raise Unverified("the webhook is for another Wix site (instanceId)")
            event = ConsentEvent.model_validate_json(envelope.data)
            if event.entityFqdn != CONSENT_ENTITY or event.slug not in EVENT_SLUGS:
                return []
            entity = event.entity_json()
            consent = None if entity is None else received(StoredConsent, json.loads(entity))
        except (KeyError, TypeError, ValueError) as error:  # ValidationError is a ValueError
            raise UnreadableEvent(f"a signed webhook this gateway cannot read: {_reason(error)}") from None
        return [self._event(event, consent)]

    def _verified(self, body: bytes, now: datetime) -> dict[str, Any]:
        key = self.settings.webhook_public_key
        if key is None:
            raise Unverified("no webhook_public_key is configured for wix: its webhooks are refused")
        try:
            unverified = jwt.decode(body, key, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
        except jwt.InvalidTokenError as error:
            raise Unverified(f"not a webhook signed with the configured key ({type(error).__name__})") from None
        expires = unverified.get("exp")
        late = not isinstance(expires, int | float) or expires + WEBHOOK_LEEWAY_S < now.timestamp()
        if expires is not None and late:
            raise Unverified("the webhook's token has expired")
        if not isinstance(unverified.get("data"), str):
            raise Unverified("the webhook's token carries no data")
        return dict(unverified)

    def _event(self, event: ConsentEvent, consent: StoredConsent | None) -> ProviderEvent:
        """The event in the terms of ``project()``, as ``read()`` would have observed that consent."""
        common: dict[str, Any] = {
            "id": event.id,
            "entity_id": event.entityId,
            "occurred_at": event.eventTime.astimezone(UTC),
            "deleted": event.slug == "deleted",
            "anonymized": event.triggeredByAnonymizeRequest,
        }
        if consent is None or consent.details.type not in IDENTIFIER:
            return ProviderEvent(**common)
        channel, field = consent.details.type, IDENTIFIER[consent.details.type]
        address = getattr(consent.details, field)
        address = address.lower() if address and field == "email" else address
        held = {} if event.slug == "deleted" else {channel.value: {"state": consent.state.value, field: address}}
        version = int(consent.revision) if consent.revision.isdigit() else None
        return ProviderEvent(
            **common, term=channel.value, address=address, held=held, changed_at=_changed_at(consent), version=version
        )

    def error_text(self, response: httpx.Response) -> str:
        """Wix's ``message`` plus its ``details``: the application error, or each field violation.

        "System errors have an empty body": then the reason phrase is all there is.
        """
        try:
            error = received(ErrorBody, json_body(response))
        except ValidationError:
            return super().error_text(response)
        return _error_text(error) or super().error_text(response)

    def _upsert_body(self, state: SubjectState, term: str, target: Mapping[str, Any]) -> dict[str, Any]:
        channel = IdentifierType(term)
        field = IDENTIFIER[channel]
        wix_state = ConsentState(target["state"])
        activity: dict[str, Any] = {
            "source": WIX_SOURCE.get(state.source, "OTHER"),
            "description": state.note,
            "updatedDate": self._decided_at(state, channel),
        }
        if wix_state in OPT_IN_LEVEL:
            activity["optInLevel"] = OPT_IN_LEVEL[wix_state]
        details = {"type": channel, field: target[field]}
        consent = {"details": details, "state": wix_state, ACTIVITY[wix_state]: activity}
        return self._body(UpsertRequest, {"marketingConsent": consent})

    def _decided_at(self, state: SubjectState, channel: IdentifierType) -> datetime:
        """When the consent's latest decision was made, in UTC: the subject's own about a purpose on this
        channel, or that of another subject holding the same address (the same time whoever pushes).

        Wix timestamps need an offset; a naive time from the store is taken as UTC.
        """
        records = state.term_records(self.settings.purposes, channel.value, IDENTIFIER[channel])
        decided = max(record.occurred_at for record in records)
        return decided.astimezone(UTC) if decided.tzinfo else decided.replace(tzinfo=UTC)

    def _known(
        self, channel: str, desired: Projection, previous: Projection, memo: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """The memo's consent for this channel, unless the address changed since (it is another consent)."""
        field = IDENTIFIER[IdentifierType(channel)]
        known = memo.get(channel)
        same_address = (previous.get(channel) or {}).get(field) == desired[channel][field]
        if same_address and isinstance(known, Mapping) and known.get("id") and known.get("revision"):
            return known
        return None

    def _sync(self, body: dict[str, Any], known: Mapping[str, Any] | None, writes: Mapping[str, Write]) -> Step:
        """One channel to ``body``: PATCH the known consent, else the one found by address, else Upsert."""
        if known is not None:
            updated = yield from self._update(body, known["id"], known["revision"], writes)
            if updated is not None:
                return updated
        existing = yield from self._lookup(body["marketingConsent"]["details"])
        if existing is not None:
            updated = yield from self._update(body, existing.id, existing.revision, writes)
            if updated is not None:
                return updated
        created = yield json_request("POST", f"{CONSENTS}/upsert", body, writes=writes)
        return self._read(created, UpsertResponse).marketingConsent

    def _update(
        self, body: dict[str, Any], consent_id: str, revision: str, writes: Mapping[str, Write]
    ) -> Generator[httpx.Request, httpx.Response, StoredConsent | None]:
        """PATCH at ``revision``; None when Wix no longer has the consent (404).

        A 409 means "entity has already changed since the requested revision"; the doc's
        fix is to GET the consent and copy its ``revision``. Done once: a second 409 means
        someone else keeps writing, so retry later rather than race them.
        """
        response = yield self._patch(body, consent_id, revision, {*NOT_FOUND, STALE}, writes)
        if response.status_code == STALE:
            current = yield json_request("GET", _consent_path(consent_id), expect=NOT_FOUND)
            if current.status_code in NOT_FOUND:
                return None
            revision = self._read(current, GetResponse).marketingConsent.revision
            response = yield self._patch(body, consent_id, revision, NOT_FOUND, writes)
            if response.status_code == STALE:
                message = f"revision still stale after a re-read: {self.error_text(response)}"
                raise TransientError(self.name, message, STALE)
        if response.status_code in NOT_FOUND:
            return None
        return self._read(response, UpsertResponse).marketingConsent

    def _patch(
        self,
        body: dict[str, Any],
        consent_id: str,
        revision: str,
        expect: Collection[int],
        writes: Mapping[str, Write],
    ) -> httpx.Request:
        consent = {**body["marketingConsent"], "id": consent_id, "revision": revision}
        mask = {"paths": ["state", ACTIVITY[ConsentState(consent["state"])]]}
        update = self._body(UpdateRequest, {"marketingConsent": consent, "mask": mask})
        return json_request("PATCH", _consent_path(consent_id), update, expect=expect, writes=writes)

    def _body(self, model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
        """``data`` checked against the wire model and Wix's rules, as it goes on the wire."""
        try:
            return model.model_validate(data).model_dump(mode="json", exclude_none=True)
        except ValidationError as error:
            raise LocalValidationError(self.name, validation_reason(error)) from error

    def _read(self, response: httpx.Response, model: type[Model]) -> Model:
        """A successful answer as ``model``; any other status is classified by ``check``."""
        self.check(response)
        try:
            return received(model, json_body(response))
        except ValidationError as error:
            message = f"unexpected answer: {validation_reason(error)}"
            raise PermanentError(self.name, message, response.status_code) from error


def _changed_at(consent: StoredConsent) -> datetime:
    """When the person last acted on this consent, by Wix's account: the activity behind its
    state (a revoke link's ``updatedDate``), else when the entity last changed."""
    activity = consent.lastRevokeActivity if consent.state is ConsentState.REVOKED else consent.lastConfirmationActivity
    moment = (activity.updatedDate if activity else None) or consent.updatedDate or consent.createdDate
    return (moment or datetime.min.replace(tzinfo=UTC)).astimezone(UTC)


def _error_text(error: ErrorBody) -> str:
    """Wix's ``message`` plus its ``details``: the application error, or each field violation."""
    parts = [error.message]
    details = error.details
    if details is not None and details.applicationError is not None:
        application = details.applicationError
        parts.append(": ".join(part for part in (application.code, application.description) if part))
    if details is not None and details.validationError is not None:
        parts.extend(
            f"{violation.field}: {violation.description or violation.violatedRule}"
            for violation in details.validationError.fieldViolations
        )
    return "; ".join(part for part in parts if part)[:500]


def _remembered(consent: StoredConsent) -> dict[str, str]:
    """What the next push needs of a consent: its id, and the revision to PATCH at."""
    return {"id": consent.id, "revision": consent.revision}


def _writes(body: Mapping[str, Any]) -> dict[str, Write]:
    """What an upsert or update body sets: its channel's state, at its activity's ``updatedDate``."""
    consent = body["marketingConsent"]
    state = ConsentState(consent["state"])
    moment = datetime.fromisoformat(consent[ACTIVITY[state]]["updatedDate"])
    return {consent["details"]["type"]: (ADOPTED[state], moment)}


def _reason(error: Exception) -> str:
    """Why a verified webhook could not be read, without its content (it names an address)."""
    if isinstance(error, ValidationError):
        return validation_reason(error)
    return type(error).__name__


def _address(state: SubjectState, field: str) -> str | None:
    """The subject's email (in lower case: Wix keeps one consent per address, whatever its case) or phone."""
    value: str | None = getattr(state, field)
    return value.lower() if value is not None and field == "email" else value


def _consent_path(consent_id: str) -> str:
    return f"{CONSENTS}/{quote(consent_id, safe='')}"


def _demo(base_url: str) -> dict[str, Any]:
    """The simulator's settings: its webhooks are signed with the simulator's public test key pair."""
    from adapters.simulators.wix_webhooks import TEST_PUBLIC_KEY  # the simulator, only when one is wanted

    return {
        "base_url": base_url,
        "api_key": secrets.token_hex(16),
        "site_id": "demo-site",
        "webhook_public_key": TEST_PUBLIC_KEY,
    }


PROVIDER = Provider(
    WixAdapter,
    simulator="adapters.simulators.wix:create_app",
    demo=_demo,
    cassette_headers=frozenset({"wix-site-id"}),  # which site's consents a request reads or writes
)

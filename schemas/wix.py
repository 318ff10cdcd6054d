"""Wix Marketing Consent wire format, field for field from the REST reference.

Reference: https://dev.wix.com/docs/rest/business-management/marketing/marketing-consent
(object, Upsert, Update, Get, Get By Identifier) and the JS SDK's published ``.d.ts``.
Field names are camelCase, exactly as on the wire.

What we send forbids unknown fields and checks the documented request rules before a
request exists. What Wix answers goes through :func:`received`: unknown fields are
ignored and the request rules are not re-applied, because Wix, not our reading of its
docs, decides what it stores (a consent made in the Wix dashboard must not break a sync).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from schemas.consent import E164

RECEIVED: Final = {"wix": "received"}
"""Validation context marking a Wix answer (see :func:`received`)."""

Model = TypeVar("Model", bound=BaseModel)


def received(model: type[Model], body: Any) -> Model:
    """Validate a Wix answer tolerantly: ignore fields Wix adds, skip the request-side rules."""
    return model.model_validate(body, extra="ignore", context=RECEIVED)


def _sending(info: ValidationInfo) -> bool:
    return info.context != RECEIVED


def _rule(message: str) -> PydanticCustomError:
    return PydanticCustomError("wix_rule", message)


class Sent(BaseModel):
    """What we send: an unknown field is our bug, never something for Wix to guess at."""

    model_config = ConfigDict(extra="forbid")


class Received(BaseModel):
    """What Wix answers: new fields on Wix's side must not fail a delivery."""

    model_config = ConfigDict(extra="ignore")


class IdentifierType(StrEnum):
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    EMAIL = "EMAIL"
    PHONE = "PHONE"


class ConsentState(StrEnum):
    UNKNOWN_STATE = "UNKNOWN_STATE"  # the documented default
    NEVER_CONFIRMED = "NEVER_CONFIRMED"
    REVOKED = "REVOKED"
    PENDING = "PENDING"  # "Relevant only for {"optInLevel": "DOUBLE_CONFIRMATION"}"
    CONFIRMED = "CONFIRMED"


class ConfirmationSource(StrEnum):
    # UNKNOWN_SOURCE is not on the REST page but is the SDK enum's protobuf default, so
    # Wix may answer with it.
    UNKNOWN_SOURCE = "UNKNOWN_SOURCE"
    IN_PERSON = "IN_PERSON"
    FORM = "FORM"
    LINK_CONFIRMATION = "LINK_CONFIRMATION"
    EMAIL_SERVICE = "EMAIL_SERVICE"
    WIX_USERS = "WIX_USERS"
    OTHER = "OTHER"


class RevokeSource(StrEnum):
    UNKNOWN_SOURCE = "UNKNOWN_SOURCE"  # as in ConfirmationSource
    IN_PERSON = "IN_PERSON"
    FORM = "FORM"
    REVOKE_LINK = "REVOKE_LINK"
    WIX_USERS = "WIX_USERS"
    OTHER = "OTHER"


class OptInLevel(StrEnum):
    UNKNOWN_OPT_IN_LEVEL = "UNKNOWN_OPT_IN_LEVEL"
    SINGLE_CONFIRMATION = "SINGLE_CONFIRMATION"
    DOUBLE_CONFIRMATION = "DOUBLE_CONFIRMATION"


class LinkType(StrEnum):
    UNKNOWN_LINK_TYPE = "UNKNOWN_LINK_TYPE"
    CONFIRMATION = "CONFIRMATION"
    REVOKE_CONFIRMATION = "REVOKE_CONFIRMATION"


class Details(Sent):
    """``MarketingConsentDetails``: the channel and ONE-OF ``email`` | ``phone``.

    https://dev.wix.com/docs/rest/business-management/marketing/marketing-consent/marketing-consent-object
    "Required fields: details.type. details.email OR details.phone." The phone is
    "in E.164 format".
    """

    type: IdentifierType
    email: str | None = Field(default=None, min_length=1)
    phone: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_matching_identifier(self, info: ValidationInfo) -> Details:
        if not _sending(info):
            return self
        if self.type is IdentifierType.UNKNOWN_TYPE:
            raise _rule("details.type must be EMAIL or PHONE")
        if self.type is IdentifierType.EMAIL and (self.email is None or self.phone is not None):
            raise _rule("an EMAIL consent needs an email and no phone")
        if self.type is IdentifierType.PHONE and (self.phone is None or self.email is not None):
            raise _rule("a PHONE consent needs a phone and no email")
        if self.phone is not None and not E164.match(self.phone):
            raise _rule("details.phone must be in E.164 format, e.g. +14155550100")
        return self


class LastConfirmationActivity(Sent):
    """How the person signed up; required for PENDING and CONFIRMED (object page)."""

    source: ConfirmationSource | None = None
    description: str | None = None
    updatedDate: datetime | None = None
    optInLevel: OptInLevel | None = None


class LastRevokeActivity(Sent):
    """How the person unsubscribed; required for REVOKED (object page)."""

    source: RevokeSource | None = None
    description: str | None = None
    updatedDate: datetime | None = None


class ExtendedFields(Sent):
    """Per-app extension data, keyed by the namespace of the app that defined it."""

    namespaces: dict[str, dict[str, Any]] = Field(default_factory=dict)


class MarketingConsent(Sent):
    """One consent per email or phone number.

    https://dev.wix.com/docs/rest/business-management/marketing/marketing-consent/marketing-consent-object
    "When a marketing consent's state is PENDING or CONFIRMED, the
    info.lastConfirmationActivity field is required. When a marketing consent's state is
    REVOKED, the info.lastRevokeActivity field is required." PENDING is "relevant only for
    DOUBLE_CONFIRMATION". ``revision`` is a string on the wire; the seed example sends a
    number, so numbers are accepted and kept as text.
    """

    id: str | None = None
    revision: str | None = Field(default=None, coerce_numbers_to_str=True)
    details: Details
    state: ConsentState = ConsentState.UNKNOWN_STATE
    createdDate: datetime | None = None
    updatedDate: datetime | None = None
    lastConfirmationActivity: LastConfirmationActivity | None = None
    lastRevokeActivity: LastRevokeActivity | None = None
    extendedFields: ExtendedFields | None = None

    @model_validator(mode="after")
    def _activity_for_state(self, info: ValidationInfo) -> MarketingConsent:
        if not _sending(info):
            return self
        confirmation = self.lastConfirmationActivity
        if self.state in (ConsentState.PENDING, ConsentState.CONFIRMED) and confirmation is None:
            raise _rule(f"a {self.state} consent needs lastConfirmationActivity")
        if self.state is ConsentState.REVOKED and self.lastRevokeActivity is None:
            raise _rule("a REVOKED consent needs lastRevokeActivity")
        if self.state is ConsentState.PENDING and (
            confirmation is None or confirmation.optInLevel is not OptInLevel.DOUBLE_CONFIRMATION
        ):
            raise _rule("PENDING is only for optInLevel DOUBLE_CONFIRMATION")
        return self


class StoredConsent(MarketingConsent):
    """A consent as Wix returns it: the read-only ``id`` and ``revision`` are always set."""

    id: str
    revision: str = Field(coerce_numbers_to_str=True)


def _state_given(consent: MarketingConsent) -> MarketingConsent:
    # Upsert and Update: "Required fields: details.type, details.email OR details.phone,
    # state." The model's UNKNOWN_STATE default must not pass for a state we forgot.
    if "state" not in consent.model_fields_set:
        raise _rule("marketingConsent.state is required")
    return consent


class UpsertRequest(Sent):
    """POST ``/marketing-consent/upsert``: create or update by email/phone.

    https://dev.wix.com/docs/rest/business-management/marketing/marketing-consent/upsert-marketing-consent
    Used instead of Create, which "always sets CONFIRMED".
    """

    marketingConsent: MarketingConsent

    @model_validator(mode="after")
    def _required(self) -> UpsertRequest:
        _state_given(self.marketingConsent)
        return self


class RemoveRequest(Sent):
    """POST ``/marketing-consent/remove``: revoke the consent of an address ("Sets REVOKED; the
    entity is kept"). Needs ``details`` and ``lastRevokeActivity``."""

    details: Details
    lastRevokeActivity: LastRevokeActivity


class Mask(Sent):
    """The explicit list of fields an Update writes ("required: true")."""

    paths: list[str] = Field(min_length=1)


class UpdateRequest(Sent):
    """PATCH ``/marketing-consent/{marketingConsent.id}``.

    https://dev.wix.com/docs/rest/business-management/marketing/marketing-consent/update-marketing-consent
    "Required parameters: mask, marketingConsent.details, marketingConsent.id". We also
    require ``revision`` (the doc example sends it; a stale one gets 409). "For existing
    marketing consents with {"type": "EMAIL"}, you can't update the state to
    UNKNOWN_STATE. Trying to do so maintains the current state." Wix would answer 200
    and change nothing, so we refuse it here.
    """

    marketingConsent: MarketingConsent
    mask: Mask

    @model_validator(mode="after")
    def _required(self) -> UpdateRequest:
        consent = _state_given(self.marketingConsent)
        if consent.id is None or consent.revision is None:
            raise _rule("an update needs marketingConsent.id and marketingConsent.revision")
        if (
            consent.details.type is IdentifierType.EMAIL
            and consent.state is ConsentState.UNKNOWN_STATE
            and "state" in self.mask.paths
        ):
            raise _rule("Wix ignores an update of an EMAIL consent to UNKNOWN_STATE")
        return self


QUERY_FIELDS = ("details.email", "details.phone", "state")
MAX_PAGE = 100  # "cursorPaging.limit: Maximum: 100"


class CursorPaging(Sent):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, min_length=1)


class Query(Sent):
    """A Wix query: ``filter`` on details.email / details.phone / state (``$eq`` or ``$in``)."""

    filter: dict[str, Any] = Field(default_factory=dict)
    cursorPaging: CursorPaging = Field(default_factory=CursorPaging)

    @field_validator("filter")
    @classmethod
    def _filterable(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(QUERY_FIELDS))
        if unknown:
            raise _rule(f"Wix filters marketing consents only on {', '.join(QUERY_FIELDS)}, not {unknown}")
        return value


class QueryRequest(Sent):
    """POST ``/marketing-consent/query``.

    https://dev.wix.com/docs/rest/business-management/marketing/marketing-consent/query-marketing-consents
    ``{query: {filter, sort, cursorPaging: {limit ≤ 100, cursor}}}``.
    """

    query: Query


class Cursors(Received):
    next: str | None = None


class PagingMetadata(Received):
    count: int | None = None
    cursors: Cursors | None = None
    hasNext: bool | None = None


class QueryResponse(Received):
    """``{marketingConsent: [...], pagingMetadata: {count, cursors: {next}, hasNext}}``."""

    marketingConsent: list[StoredConsent] = Field(default_factory=list)
    pagingMetadata: PagingMetadata | None = None

    @property
    def next_cursor(self) -> str | None:
        paging = self.pagingMetadata
        if paging is None or not paging.hasNext or paging.cursors is None:
            return None
        return paging.cursors.next


class Link(Received):
    """A confirmation (double opt-in) or revoke-confirmation link."""

    type: LinkType | None = None
    url: str | None = None


class GetResponse(Received):
    """GET ``/marketing-consent/{id}`` → ``{marketingConsent}``."""

    marketingConsent: StoredConsent


class UpsertResponse(Received):
    """Upsert's (and Update's) answer: ``{marketingConsent, link}``."""

    marketingConsent: StoredConsent
    link: Link | None = None


class CommunicationEligibility(Received):
    """Whether Wix would let marketing reach this address (NEVER_CONFIRMED: EMAIL yes, PHONE no)."""

    granted: bool | None = None
    reason: str | None = None
    revokeConfirmationLink: str | None = None


class GetByResponse(Received):
    """GET ``/marketing-consent/get-by?type=&email=|phone=`` (docs: get-marketing-consent-by-identifier).

    Its query parameters "render wrong" on the REST page; the official SDK sends a query string.
    """

    marketingConsent: StoredConsent | None = None
    communicationEligibility: CommunicationEligibility | None = None


class ApplicationError(Received):
    """Business-logic refusal, e.g. NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED."""

    code: str | None = None
    description: str | None = None
    data: dict[str, Any] | None = None


class FieldViolation(Received):
    field: str | None = None
    description: str | None = None
    violatedRule: str | None = None
    ruleName: str | None = None
    data: dict[str, Any] | None = None


class ValidationErrorDetails(Received):
    fieldViolations: list[FieldViolation] = Field(default_factory=list)


class ErrorDetails(Received):
    applicationError: ApplicationError | None = None
    validationError: ValidationErrorDetails | None = None


class ErrorBody(Received):
    """``{message, details}`` of a failed call; system errors have an empty body.

    https://dev.wix.com/docs/api-reference/articles/work-with-wix-apis/troubleshooting/about-errors
    """

    message: str = ""
    details: ErrorDetails | None = None


class BulkUpsertRequest(Sent):
    """POST ``/bulk/marketing-consent/upsert``: ``{"info": [MarketingConsent, …]}``, each item upserted by
    the single Upsert's rules (PROVIDERS.md §7). The maximum items per call is undocumented: a setting."""

    info: list[MarketingConsent] = Field(min_length=1)

    @model_validator(mode="after")
    def _required(self) -> BulkUpsertRequest:
        for consent in self.info:
            _state_given(consent)
        return self


class BulkUpsertResult(Received):
    """One item's result: the consent as stored, or the error that item alone failed with."""

    originalIndex: int = Field(ge=0)
    marketingConsent: StoredConsent | None = None
    error: ErrorBody | None = None
    link: Link | None = None


class BulkMetadata(Received):
    totalSuccess: int | None = None
    totalFailure: int | None = None


class BulkUpsertResponse(Received):
    """``{results: [{originalIndex, marketingConsent | error, link}], metadata: {totalSuccess, totalFailure}}``."""

    results: list[BulkUpsertResult] = Field(default_factory=list)
    metadata: BulkMetadata | None = None


# -- webhooks ------------------------------------------------------------------------------
# https://dev.wix.com/docs/rest/articles/get-started/webhook-structure: the request body is a JWT
# (RS256, signed with the app's key) whose ``data`` claim is a JSON string of WebhookData; its
# ``data`` is a JSON string of ConsentEvent, whose entity is a JSON string again.

CONSENT_ENTITY: Final = "wix.marketing.marketing_consent.v1.marketing_consent"
EVENT_SLUGS: Final = ("created", "updated", "deleted")


class WebhookData(Received):
    """The JWT's ``data`` claim, decoded: which event, for which site (app instance)."""

    eventType: str
    instanceId: str
    data: str  # the event, as a JSON string
    identity: str | None = None  # who acted, as a JSON string


class CreatedEvent(Received):
    entityAsJson: str


class UpdatedEvent(Received):
    currentEntityAsJson: str


class DeletedEvent(Received):
    movedToTrash: bool | None = None
    deletedEntityAsJson: str | None = None


class ConsentEvent(Received):
    """One Marketing Consent Created / Updated / Deleted event (``WebhookData.data``)."""

    id: str = Field(min_length=1, max_length=200)  # the event's own id: "not related to the ID of the entity"
    entityFqdn: str
    slug: str
    entityId: str = Field(min_length=1, max_length=200)
    eventTime: datetime
    triggeredByAnonymizeRequest: bool = False
    originatedFrom: str | None = None
    createdEvent: CreatedEvent | None = None
    updatedEvent: UpdatedEvent | None = None
    deletedEvent: DeletedEvent | None = None

    def entity_json(self) -> str | None:
        """The consent after the event (before it, for a deletion), as a JSON string, if the event carries it."""
        if self.createdEvent is not None:
            return self.createdEvent.entityAsJson
        if self.updatedEvent is not None:
            return self.updatedEvent.currentEntityAsJson
        return self.deletedEvent.deletedEntityAsJson if self.deletedEvent is not None else None

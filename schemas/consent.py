"""The normalized consent model every caller and every adapter speaks.

Request models are strict and forbid unknown fields: a consent service must not guess
what a misspelled field or a ``0`` meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from schemas import tcf

DEFAULT_PURPOSES: tuple[str, ...] = (
    "email_marketing",
    "sms_marketing",
    "push_notifications",
    "behavioral_campaigns",
    "coupon_campaigns",
    "punchcard_campaigns",
    "link_tracking",
    "analytics",
)

E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # [0-9], not \d: other scripts' digits are not E.164
SOURCES = ("web", "mobile", "in_person", "form", "import", "provider:<name>")
GATEWAY_SOURCES = ("repair", "expiry", "erasure")  # the gateway's own ledger entries: a caller may not claim them
SOURCE = re.compile(r"(web|mobile|in_person|form|import|repair|expiry|erasure|provider:[a-z][a-z0-9_-]{0,39})")
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})", re.I
)
YEAR_PATTERN = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001 to 9999: there is no year 0
RFC3339_PATTERN = (  # the same, as the OpenAPI document states it, with the calendar's ranges
    rf"^{YEAR_PATTERN}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
NO_CONTROLS = r"^[^\u0000-\u001f\u007f-\u009f]*$"
NO_CONTROLS_BUT_LINES = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
CALLER_SOURCE = r"^(web|mobile|in_person|form|import|provider:[a-z][a-z0-9_-]{0,39})$"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No consent decision recorded here can predate this; an earlier time is a client bug."""
SINGLE_LINE = re.compile(NO_CONTROLS)
TEXT = re.compile(NO_CONTROLS_BUT_LINES)
"""A free-text field (``note``) may hold tab and line breaks, and no other control character."""


class PurposeState(StrEnum):
    granted = "granted"
    denied = "denied"
    pending = "pending"  # double opt-in awaiting confirmation


def _e164(value: str) -> str:
    if not E164.fullmatch(value):
        raise ValueError("must be an E.164 phone number, e.g. +14155550100")
    return value


def _source(value: str) -> str:
    if not SOURCE.fullmatch(value):
        raise ValueError(f"must be one of {', '.join(SOURCES)}")
    return value


def _rfc3339(value: Any) -> Any:
    """Only an RFC 3339 date-time with an offset: ``"1700000000"`` or ``1700000000`` is not a
    time, whatever pydantic's lax parsing (needed behind this validator) would make of it."""
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.fullmatch(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-23T10:00:00Z")


def _utc(value: datetime) -> datetime:
    """In UTC, which every comparison and column uses; a time that leaves the calendar there is refused."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 string as an aware UTC datetime; ValueError when it is not one (or overflows)."""
    _rfc3339(text)
    return _utc(datetime.fromisoformat(text))


def _single_line(value: str) -> str:
    """The pattern the document states (Unicode's control characters, Cc), checked as it states it."""
    if not SINGLE_LINE.fullmatch(value):
        raise ValueError("must not contain control characters")
    return value


def _free_text(value: str) -> str:
    if not TEXT.fullmatch(value):
        raise ValueError("must not contain control characters other than tab and line breaks")
    return value


# The json_schema_extra patterns say in the OpenAPI document what the validators enforce.
Timestamp = Annotated[
    AwareDatetime,
    Field(strict=False, json_schema_extra={"pattern": RFC3339_PATTERN}),
    BeforeValidator(_rfc3339),
    AfterValidator(_utc),
]
Phone = Annotated[str, AfterValidator(_e164), Field(json_schema_extra={"pattern": f"^{E164.pattern}$"})]
Source = Annotated[
    str, AfterValidator(_source), WithJsonSchema({"type": "string", "pattern": CALLER_SOURCE}, mode="validation")
]
SubjectId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]
Token = Annotated[str, AfterValidator(_single_line), Field(json_schema_extra={"pattern": NO_CONTROLS})]
FreeText = Annotated[str, AfterValidator(_free_text), Field(json_schema_extra={"pattern": NO_CONTROLS_BUT_LINES})]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Subject(Strict):
    """The person a decision is about, in the caller's own terms."""

    id: SubjectId
    email: EmailStr | None = None
    phone: Phone | None = None


class Decision(Strict):
    """One consent decision as a caller posts it to ``POST /v1/consents``.

    It names only the purposes it changes; the subject's state is the merge of all
    decisions, newest ``occurred_at`` winning per purpose.
    """

    subject: Subject
    purposes: dict[str, PurposeState] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"x-vocabulary": "purposes"},  # the configured ones
    )
    vendors: dict[Annotated[Token, Field(min_length=1, max_length=100)], bool] | None = Field(
        default=None, max_length=500
    )
    tcf_string: Token | None = Field(default=None, min_length=1, max_length=2000)
    occurred_at: Timestamp = Field(json_schema_extra={"x-vocabulary": "years"})  # 2000 to this year
    expires_at: Timestamp | None = None
    source: Source = "web"
    note: FreeText | None = Field(default=None, max_length=1000)
    recreate: bool = Field(default=False, description="record it for a subject that was erased (else 409)")

    @field_validator("purposes")
    @classmethod
    def _known_purposes(cls, value: dict[str, PurposeState], info: ValidationInfo) -> dict[str, PurposeState]:
        vocabulary = (info.context or {}).get("purposes")
        if vocabulary is None:  # re-reading a stored decision: it was checked on the way in
            return value
        unknown = sorted(set(value) - set(vocabulary))
        if unknown:
            raise ValueError(f"unknown purpose {', '.join(unknown)}; configured: {', '.join(vocabulary)}")
        return value

    @field_validator("tcf_string")
    @classmethod
    def _decodable_tcf(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A caller's string must decode as an IAB TCF v2 core string: refused at the door, not
        found unreadable at delivery. Stored decisions are re-read unchecked, as they were."""
        if value is not None and (info.context or {}).get("caller"):
            try:
                tcf.decode(value)
            except tcf.TCFError as error:
                raise ValueError(f"is not an IAB TCF v2 consent string: {error}") from None
        return value

    @field_validator("source")
    @classmethod
    def _callers_source(cls, value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("caller") and value in GATEWAY_SOURCES:
            raise ValueError(f"must be one of {', '.join(SOURCES)}")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, value: datetime, info: ValidationInfo) -> datetime:
        """Not before 2000, and not later than the gateway's clock allows (``now`` + ``max_skew``).

        A far-future time would win every later decision for its purposes, forever: one bad
        client clock would make a person's opt-out impossible.
        """
        if value < EARLIEST:
            raise ValueError(f"must not be before {EARLIEST:%Y-%m-%d}")
        context = info.context or {}
        now, skew = context.get("now"), context.get("max_skew")
        if now is not None and skew is not None and value > now + skew:
            raise ValueError(f"is in the future: at most {skew.total_seconds():g} s ahead of the gateway's clock")
        return value

    @field_validator("expires_at")
    @classmethod
    def _expiry_ahead(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        """Later than the decision, and (for a caller's decision) still ahead of the gateway's clock:
        consent that has already ended would be pushed as an opt-in, then at once as an opt-out."""
        if value is None:
            return value
        occurred_at = info.data.get("occurred_at")
        if occurred_at is not None and value <= occurred_at:
            raise ValueError("must be later than occurred_at")
        now = (info.context or {}).get("now")
        if now is not None and value <= now:
            raise ValueError("is already past: the consent would end before it is applied")
        return value


def own_decision(
    subject_id: str,
    purposes: Mapping[str, PurposeState],
    occurred_at: datetime,
    source: str,
    note: str,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """A decision the gateway records on its own account (repair, expiry, erasure, an adoption from a
    provider): validated like any other, without the rules only a caller's decision is held to
    (``context`` adds the clock's: an adoption is held to the same bound on time as a caller)."""
    body = {"subject": {"id": subject_id}, "purposes": dict(purposes), "occurred_at": occurred_at}
    return Decision.model_validate(body | {"source": source, "note": note}, strict=False, context=context)


def decision_context(purposes: list[str], now: datetime, max_skew_s: float) -> dict[str, Any]:
    """What validating a caller's decision needs to know: the vocabulary and the gateway's clock."""
    return {"purposes": purposes, "now": now, "max_skew": timedelta(seconds=max_skew_s), "caller": True}


class PurposeRecord(BaseModel):
    """The winning state of one purpose and when the person decided it."""

    model_config = ConfigDict(frozen=True)

    state: PurposeState
    occurred_at: AwareDatetime


class Shared(BaseModel):
    """The other live subjects holding one of a subject's addresses now. At a provider that keeps one
    consent per address (Wix) their decisions share that consent, so what counts of them is summed up
    per purpose, whatever their number: the most protective state any of them holds, and the newest time."""

    model_config = ConfigDict(frozen=True)

    subject_ids: list[str] = Field(default_factory=list)  # the first of them, in id order (at most SHOWN)
    count: int = 0  # how many in all
    purposes: dict[str, PurposeRecord] = Field(default_factory=dict)

    def named(self) -> str:
        more = self.count - len(self.subject_ids)
        return ", ".join(self.subject_ids) + (f" and {more} more" if more > 0 else "")


class FormerAddress(BaseModel):
    """An address the subject held before, which no other subject holds now."""

    model_config = ConfigDict(frozen=True)

    address: str
    replaced_at: AwareDatetime  # when the decision that changed it happened


class SubjectState(BaseModel):
    """A subject's merged current state: what adapters translate, never a single decision.

    Adapters receive this so a change to one purpose never clobbers another
    (full-state semantics).
    """

    model_config = ConfigDict(frozen=True)

    subject_id: str
    email: str | None = None
    phone: str | None = None
    purposes: dict[str, PurposeRecord] = Field(default_factory=dict)
    vendors: dict[str, bool] = Field(default_factory=dict)
    tcf_string: str | None = None
    expires_at: AwareDatetime | None = None
    source: str = "web"
    note: str | None = None
    occurred_at: AwareDatetime
    erased_at: AwareDatetime | None = None  # an erasure was requested: pushes remove the person instead
    shared: dict[str, Shared] = Field(default_factory=dict)  # "email"/"phone": the others holding it now
    former: dict[str, list[FormerAddress]] = Field(default_factory=dict)  # "email"/"phone": held before
    address_since: dict[str, AwareDatetime] = Field(default_factory=dict)  # "email"/"phone": with these holders since

    def private(self) -> tuple[str, ...]:
        """The texts about the person a push may carry: what no error text or log line repeats."""
        return tuple(text for text in (self.note, self.tcf_string, self.email, self.phone) if text)

    def records_in(self, mapping: Mapping[str, str]) -> dict[str, list[PurposeRecord]]:
        """Group the subject's purpose records by the provider term each purpose maps to."""
        grouped: dict[str, list[PurposeRecord]] = {}
        for purpose, term in mapping.items():
            record = self.purposes.get(purpose)
            if record is not None:
                grouped.setdefault(term, []).append(record)
        return grouped

    def purposes_in(self, mapping: Mapping[str, str]) -> dict[str, list[PurposeState]]:
        """Group the subject's purpose states by the provider term each purpose maps to."""
        return {term: [record.state for record in records] for term, records in self.records_in(mapping).items()}

    def term_records(self, mapping: Mapping[str, str], term: str, field: str | None = None) -> list[PurposeRecord]:
        """The decisions behind one provider term: the subject's own for the purposes mapped to it, and
        where the provider keeps that term per address (``field``), those of the address's other holders."""
        others = self.shared.get(field) if field else None
        return [
            record
            for purposes in (self.purposes, others.purposes if others else {})
            for purpose, record in purposes.items()
            if mapping.get(purpose) == term
        ]


def most_restrictive(states: list[PurposeState]) -> PurposeState:
    """Where several purposes share one provider term, a denial anywhere wins, then pending."""
    for candidate in (PurposeState.denied, PurposeState.pending):
        if candidate in states:
            return candidate
    return PurposeState.granted


def merge(before: SubjectState | None, decision: Decision) -> tuple[SubjectState, list[str]]:
    """The subject's state once ``decision`` is applied, and the purposes it won.

    Per purpose the newest ``occurred_at`` wins and a tie goes to the later-received
    decision, so a late, older decision changes nothing. The newest decision also owns the
    subject-level fields; an older one only fills fields still unknown.
    """
    occurred_at = decision.occurred_at.astimezone(UTC)
    current = before.purposes if before else {}
    effective = sorted(p for p in decision.purposes if p not in current or occurred_at >= current[p].occurred_at)
    purposes = current | {p: PurposeRecord(state=decision.purposes[p], occurred_at=occurred_at) for p in effective}
    given = {"email": decision.subject.email, "phone": decision.subject.phone, "tcf_string": decision.tcf_string}
    if before is None or occurred_at >= before.occurred_at:
        fields = {key: value for key, value in given.items() if value is not None} | {
            "occurred_at": occurred_at,
            "source": decision.source,
            "note": decision.note,
            "expires_at": decision.expires_at.astimezone(UTC) if decision.expires_at else None,
            "vendors": (before.vendors if before else {}) | (decision.vendors or {}),
        }
    else:
        fields = {key: value for key, value in given.items() if value is not None and getattr(before, key) is None}
    base = before or SubjectState(subject_id=decision.subject.id, occurred_at=occurred_at)
    return base.model_copy(update={"purposes": purposes, **fields}), effective

"""The normalized consent model every caller and every adapter speaks.

Request models are strict and forbid unknown fields: a consent service must not guess
what a misspelled field or a ``0`` meant.
"""

from __future__ import annotations

import re
from datetime import UTC
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

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

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
SOURCE = re.compile(r"^(web|mobile|in_person|form|import|provider:[a-z][a-z0-9_-]{0,39})$")


class PurposeState(StrEnum):
    granted = "granted"
    denied = "denied"
    pending = "pending"  # double opt-in awaiting confirmation


def _e164(value: str) -> str:
    if not E164.match(value):
        raise ValueError("must be an E.164 phone number, e.g. +14155550100")
    return value


def _source(value: str) -> str:
    if not SOURCE.match(value):
        raise ValueError("must be one of web, mobile, in_person, form, import, provider:<name>")
    return value


Phone = Annotated[str, AfterValidator(_e164)]
Source = Annotated[str, AfterValidator(_source)]
SubjectId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]


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
    purposes: dict[str, PurposeState] = Field(min_length=1, max_length=64)
    vendors: dict[Annotated[str, Field(min_length=1, max_length=100)], bool] | None = Field(
        default=None, max_length=500
    )
    tcf_string: str | None = Field(default=None, min_length=1, max_length=2000)
    occurred_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    source: Source = "web"
    note: str | None = Field(default=None, max_length=1000)

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

    @model_validator(mode="after")
    def _expiry_after_decision(self) -> Decision:
        if self.expires_at is not None and self.expires_at <= self.occurred_at:
            raise ValueError("expires_at must be later than occurred_at")
        return self


class PurposeRecord(BaseModel):
    """The winning state of one purpose and when the person decided it."""

    model_config = ConfigDict(frozen=True)

    state: PurposeState
    occurred_at: AwareDatetime


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

    def purposes_in(self, mapping: dict[str, str]) -> dict[str, list[PurposeState]]:
        """Group the subject's purpose states by the provider term each purpose maps to."""
        grouped: dict[str, list[PurposeState]] = {}
        for purpose, term in mapping.items():
            record = self.purposes.get(purpose)
            if record is not None:
                grouped.setdefault(term, []).append(record.state)
        return grouped


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

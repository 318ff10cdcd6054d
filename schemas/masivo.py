"""Masivo storefront v1 wire format, field for field from its OpenAPI, plus the TCF check.

Source: https://docs.masivo.ai/api-reference/customers/[id]/consent/patch (seed copy:
``shared/seeds/masivo-update-customer-consent.md``). Request models are strict and forbid
unknown fields, so our own slip shows up here rather than as a 422 from Masivo.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from schemas import tcf

DOCUMENTED_PATTERN = r"^CO[A-Za-z0-9_-]+$"
"""Masivo's documented ``consent_string`` pattern. It predates TCF v2 strings created after
2021-01-14 (their second letter is 'P' or 'Q') and TCF v2.3's segments joined by '.', so it
admits no string a CMP, or this gateway, makes today."""
CONSENT_STRING_PATTERN = r"^C[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
"""The pattern the gateway checks by default: an IAB TCF v2 string of any creation date, with its
segments (``providers.masivo.consent_string_pattern`` sets another, e.g. the documented one)."""
CONSENT_STRING_MIN = 20
CONSENT_STRING_MAX = 500

PURPOSES: tuple[str, ...] = (
    "behavioral_campaigns",
    "coupon_campaigns",
    "punchcard_campaigns",
    "email_marketing",
    "push_notifications",
    "link_tracking",
)
"""The keys of ``ConsentPurposes``: the only purposes Masivo knows."""

NO_CONSENT_STRING = "Masivo needs an IAB TCF consent string and none is known for this subject"


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Reply(BaseModel):
    """Responses are read tolerantly: an extra key from Masivo must not fail a delivery."""

    model_config = ConfigDict(strict=True, extra="ignore")


class ConsentPurposes(_Wire):
    """``ConsentPurposes``: one optional boolean per purpose.

    https://docs.masivo.ai/api-reference/customers/[id]/consent/patch
    """

    behavioral_campaigns: StrictBool | None = None
    coupon_campaigns: StrictBool | None = None
    punchcard_campaigns: StrictBool | None = None
    email_marketing: StrictBool | None = None
    push_notifications: StrictBool | None = None
    link_tracking: StrictBool | None = None


class Consent(_Wire):
    """``Consent``: only ``consent_string`` is required.

    https://docs.masivo.ai/api-reference/customers/[id]/consent/patch
    """

    consent_string: str = Field(min_length=CONSENT_STRING_MIN, max_length=CONSENT_STRING_MAX)
    version: str | None = None
    # "format: date-time" is RFC 3339, which requires an offset.
    consent_timestamp: AwareDatetime | None = None
    customer_id: str | None = None
    purposes: ConsentPurposes | None = None
    vendors: dict[str, StrictBool] | None = None

    @field_validator("consent_string")
    @classmethod
    def _pattern(cls, value: str, info: ValidationInfo) -> str:
        """The documented ``pattern``, or the operator's replacement passed as ``consent_string_pattern``
        in the validation context (``providers.masivo.consent_string_pattern``)."""
        pattern = (info.context or {}).get("consent_string_pattern", CONSENT_STRING_PATTERN)
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must match {pattern}")
        return value


class CustomerConsentUpdate(_Wire):
    """Body of ``PATCH /customers/{id}/consent``.

    https://docs.masivo.ai/api-reference/customers/[id]/consent/patch
    """

    consent: Consent


class ConsentResponseData(_Reply):
    """The ``data`` object of ``ConsentResponse``.

    https://docs.masivo.ai/api-reference/customers/[id]/consent/patch
    """

    consent: Consent


class ConsentResponse(_Reply):
    """200 of ``PATCH`` and ``GET /customers/{id}/consent``: ``{data: {consent}}``.

    https://docs.masivo.ai/api-reference/customers/[id]/consent/patch
    """

    data: ConsentResponseData


class HeldConsent(_Reply):
    """A consent as ``GET /customers/{id}/consent`` answers it: read as it comes, nothing required
    ("If consent is null or empty… returns default values with all purposes true").

    https://docs.masivo.ai/api-reference/customers/[id]/consent/get
    """

    model_config = ConfigDict(strict=False, extra="ignore")

    consent_string: str | None = None
    version: str | None = None
    consent_timestamp: AwareDatetime | None = None
    customer_id: str | None = None
    purposes: dict[str, StrictBool] = Field(default_factory=dict)
    vendors: dict[str, StrictBool] = Field(default_factory=dict)

    @property
    def recorded(self) -> bool:
        """Whether consent was ever recorded: the all-true default carries no string and no time."""
        return self.consent_string is not None or self.consent_timestamp is not None


class HeldConsentData(_Reply):
    consent: HeldConsent | None = None


class HeldConsentResponse(_Reply):
    """200 of ``GET /customers/{id}/consent``: ``{data: {consent}}``."""

    data: HeldConsentData


class AuthorizeResponse(_Reply):
    """200 of ``GET /auth/authorize``: ``{"data": "<JWT>"}``, valid for one hour.

    https://docs.masivo.ai/guides/integrate-with-masivo
    """

    data: str = Field(min_length=1)


class ErrorBody(_Reply):
    """``Error``: the body of Masivo's 4xx answers (404 customer not found, 422 invalid data).

    https://docs.masivo.ai/api-reference/customers/[id]/consent/patch
    """

    error: str
    details: str


def tcf_problem(consent_string: str | None, pattern: str = CONSENT_STRING_PATTERN) -> str | None:
    """Why Masivo would refuse this consent string, or ``None`` when it is fine to send.

    Masivo documents ``pattern: ^CO[A-Za-z0-9_-]+$`` and 20-500 characters; the gateway checks
    ``pattern`` (by default any TCF v2 string, see ``CONSENT_STRING_PATTERN``). "CO" is v2 ('C')
    created before 2021-01-14 ('O' = top bits of Created), so under the documented pattern a
    string from a current CMP ("CP…", "CQ…") fails, as does one with '.'-joined segments: the
    reason says which, with the string's creation date.
    """
    if not consent_string:
        return NO_CONSENT_STRING
    created, undecodable = _decode(consent_string)
    if not re.fullmatch(pattern, consent_string):
        whose = "Masivo's documented" if pattern == DOCUMENTED_PATTERN else "the"
        rejected = f"{whose} consent_string pattern {pattern} rejects it"
        if created is None:
            return f"{rejected}, and {undecodable}"
        why = []
        if not consent_string.startswith("CO"):
            why.append(
                f"it is an IAB TCF v2 string created {created:%Y-%m-%d}, and v2 strings created after "
                f"January 2021 start with 'CP' or 'CQ' (this one starts with {consent_string[:2]!r})"
            )
        if "." in consent_string:
            why.append(f"it has {consent_string.count('.') + 1} segments joined by '.' where the pattern allows one")
        return f"{rejected}: {'; '.join(why)}" if why else rejected
    if not CONSENT_STRING_MIN <= len(consent_string) <= CONSENT_STRING_MAX:
        return (
            f"Masivo accepts consent strings of {CONSENT_STRING_MIN}-{CONSENT_STRING_MAX} characters; "
            f"this one has {len(consent_string)}"
        )
    if created is None:
        return f"the consent string does not decode as IAB TCF v2: {undecodable}"
    return None


def _decode(consent_string: str) -> tuple[datetime, None] | tuple[None, str]:
    """The v2 string's Created date, or why it does not decode as IAB TCF v2."""
    try:
        return tcf.decode(consent_string).created, None
    except tcf.TCFError as error:
        return None, str(error)

"""Intempt consent wire format, field for field from its OpenAPI, plus the rules it enforces.

Source: https://docs.intempt.com/consent-24815716e0 (seed copy: ``shared/seeds/intempt-consent.md``)
and the official Python SDK (``intempt`` 2.0.0, ``Consent._record``) where the docs are silent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

TimestampUnit = Literal["ms", "s"]

UNIT: dict[str, timedelta] = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The SDK: "The consent endpoint compares timestamp * 1000 against millisecond bounds" (2010-2040);
# before 2010 is rejected, after 2040 "silently replace[d] with its own clock".
EARLIEST = datetime(2010, 1, 1, tzinfo=UTC)
LATEST = datetime(2040, 1, 1, tzinfo=UTC)


def epoch(moment: datetime, unit: str) -> int:
    """Whole ``unit``s since the Unix epoch, in exact integer arithmetic (no float rounding)."""
    return (moment - EPOCH) // UNIT[unit]


class ConsentData(BaseModel):
    """Body of ``POST /v1/{org}/projects/{project}/consents/data``.

    https://docs.intempt.com/consent-24815716e0

    Validate with ``context={"timestamp_unit": "s"}`` when sending seconds (default: ms,
    as documented).
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    action: Literal["accept", "reject"]
    timestamp: int
    validUntil: int | Literal["unlimited"]
    source: str = Field(min_length=1)
    category: str | None = Field(default=None, min_length=1)
    userId: str | None = Field(default=None, min_length=1)
    email: str | None = None
    message: str | None = None
    profileId: str | None = Field(default=None, min_length=1)
    # A string, never a number: the SDK's "str(), never int(): a 19-digit snowflake loses precision".
    sourceId: str | None = Field(default=None, min_length=1)

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, value: int, info: ValidationInfo) -> int:
        unit = _unit(info)
        earliest, latest = epoch(EARLIEST, unit), epoch(LATEST, unit)
        if not earliest <= value < latest:
            raise ValueError(
                f"must be epoch {unit} between {EARLIEST:%Y} and {LATEST:%Y} ({earliest}..{latest}); "
                "Intempt rejects earlier values and replaces later ones with its own clock"
            )
        return value

    @field_validator("validUntil")
    @classmethod
    def _valid_until_in_ms(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < epoch(EARLIEST, "ms"):
            raise ValueError("must be epoch milliseconds (the docs: 'a specific time in milliseconds') or 'unlimited'")
        return value

    @model_validator(mode="after")
    def _who_and_when(self, info: ValidationInfo) -> ConsentData:
        if self.userId is None and self.profileId is None:
            raise ValueError("userId or profileId is required: the SDK refuses a consent without a user")
        if self.profileId is not None and self.sourceId is None:
            raise ValueError("profileId requires sourceId")
        unit = _unit(info)
        if isinstance(self.validUntil, int) and self.validUntil <= self.timestamp * UNIT[unit] // UNIT["ms"]:
            raise ValueError("validUntil must be later than timestamp")
        return self


def _unit(info: ValidationInfo) -> str:
    """The unit ``timestamp`` is in: the adapter's setting, else the documented milliseconds."""
    unit: str = (info.context or {}).get("timestamp_unit", "ms")
    return unit


class ErrorBody(BaseModel):
    """The 400 body: ``{"error": "Invalid request", "message": "Required field 'action' is missing…"}``.

    https://docs.intempt.com/consent-24815716e0
    """

    model_config = ConfigDict(strict=True, extra="ignore")

    error: str
    message: str

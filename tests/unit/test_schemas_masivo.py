"""Masivo wire schema (OpenAPI rules) and the TCF consent-string check."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import tcf
from schemas.masivo import (
    DOCUMENTED_PATTERN,
    NO_CONSENT_STRING,
    PURPOSES,
    AuthorizeResponse,
    Consent,
    ConsentPurposes,
    ConsentResponse,
    CustomerConsentUpdate,
    ErrorBody,
    tcf_problem,
)

EXAMPLE = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"  # the OpenAPI's example: v2, created 2020-02-20
V1 = "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"


def with_created(consent_string: str, created: datetime) -> str:
    """``consent_string`` with its Created field replaced: strings from today's CMPs start "CQ"."""
    return tcf.encode(dataclasses.replace(tcf.decode(consent_string), created=created))


CQ = with_created(EXAMPLE, datetime(2025, 6, 1, 12, tzinfo=UTC))
CP = with_created(EXAMPLE, datetime(2022, 3, 1, tzinfo=UTC))


def test_helper_builds_current_strings() -> None:
    assert (CQ[:2], CP[:2]) == ("CQ", "CP")
    assert with_created(EXAMPLE, datetime(2020, 2, 20, 23, 57, 39, tzinfo=UTC))[:2] == "CO"


@pytest.mark.parametrize(
    ("consent_string", "expected"),
    [
        (None, [NO_CONSENT_STRING]),
        ("", [NO_CONSENT_STRING]),
        (
            CQ,
            [
                "pattern ^CO[A-Za-z0-9_-]+$ rejects it",
                "v2 string created 2025-06-01",
                "'CP' or 'CQ'",
                "starts with 'CQ'",
            ],
        ),
        (CP, ["pattern ^CO[A-Za-z0-9_-]+$ rejects it", "created 2022-03-01", "starts with 'CP'"]),
        (f"{CQ}.YAAAAAAAAAAA", ["created 2025-06-01", "starts with 'CQ'", "2 segments joined by '.'"]),
        (
            f"{EXAMPLE}.YAAAAAAAAAAA",
            ["rejects it: it has 2 segments joined by '.' where the pattern allows one"],
        ),
        (V1, ["pattern ^CO[A-Za-z0-9_-]+$ rejects it", "IAB TCF version 1, not 2"]),
        ("hello world, consent!", ["rejects it", "not base64url: ' ' at position 5"]),
        ("COvF", ["20-500 characters; this one has 4"]),
        ("CO" + "A" * 499, ["this one has 501"]),
        ("CO" + "A" * 19, ["does not decode as IAB TCF v2", "truncated: VendorListVersion"]),
        ("CO" + "A" * 40, ["does not decode as IAB TCF v2", "truncated: publisher restrictions"]),
    ],
)
def test_under_the_documented_pattern_tcf_problem_explains_why(consent_string: str | None, expected: list[str]) -> None:
    reason = tcf_problem(consent_string, DOCUMENTED_PATTERN)
    assert reason is not None
    for part in expected:
        assert part in reason


@pytest.mark.parametrize(
    ("consent_string", "expected"),
    [
        (V1, ["consent_string pattern ^C[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$ rejects it", "IAB TCF version 1, not 2"]),
        (f"{CQ}.", ["the consent_string pattern", "rejects it, and segment 2 is not base64url"]),
        ("hello world, consent!", ["rejects it", "not base64url: ' ' at position 5"]),
    ],
)
def test_by_default_tcf_problem_refuses_what_is_not_tcf_v2(consent_string: str, expected: list[str]) -> None:
    reason = tcf_problem(consent_string)
    assert reason is not None
    for part in expected:
        assert part in reason


@pytest.mark.parametrize("consent_string", [CQ, CP, f"{CQ}.IAAA.YAAAAAAAAAAA"])
def test_by_default_tcf_problem_accepts_current_strings_with_their_segments(consent_string: str) -> None:
    assert tcf_problem(consent_string) is None


@pytest.mark.parametrize("consent_string", [EXAMPLE, "CO" + "A" * 42])  # 42: the shortest whole core
def test_tcf_problem_accepts_v2_strings_masivo_allows(consent_string: str) -> None:
    assert tcf_problem(consent_string) is None


@pytest.mark.parametrize(
    "purposes",
    [
        {},
        {"email_marketing": True},
        {"link_tracking": False, "coupon_campaigns": None},
        dict.fromkeys(
            [
                "behavioral_campaigns",
                "coupon_campaigns",
                "punchcard_campaigns",
                "email_marketing",
                "push_notifications",
                "link_tracking",
            ],
            True,
        ),
    ],
)
def test_purposes_accept(purposes: dict[str, Any]) -> None:
    parsed = ConsentPurposes.model_validate(purposes)
    assert parsed.model_dump(exclude_unset=True) == purposes
    assert parsed.model_dump() == dict.fromkeys(PURPOSES) | purposes, "a purpose not given is None, never False"


@pytest.mark.parametrize(
    "purposes",
    [{"email_marketing": 1}, {"email_marketing": "true"}, {"sms_marketing": True}, {"analytics": False}],
)
def test_purposes_reject(purposes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConsentPurposes.model_validate(purposes)


WHEN = datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "consent",
    [
        {"consent_string": EXAMPLE},
        {"consent_string": "CO" + "A" * 18},  # 20 characters: the pattern's minimum
        {"consent_string": "CO" + "-_" * 249},  # 500 characters
        {
            "consent_string": EXAMPLE,
            "version": "2.0",
            "consent_timestamp": WHEN,
            "customer_id": "c-1",
            "purposes": {"email_marketing": True},
            "vendors": {"vendor_123": True, "vendor_456": False},
        },
        {
            "consent_string": EXAMPLE,
            "consent_timestamp": datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=-6))),
        },
    ],
)
def test_consent_accept(consent: dict[str, Any]) -> None:
    parsed = Consent.model_validate(consent)
    assert parsed.model_dump(exclude_unset=True) == consent
    assert parsed.consent_string == consent["consent_string"]
    if "consent_timestamp" in consent:
        assert parsed.consent_timestamp is not None
        assert parsed.consent_timestamp.utcoffset() == consent["consent_timestamp"].utcoffset(), "its offset is kept"


@pytest.mark.parametrize(
    "consent",
    [
        {},
        {"version": "2.0"},
        {"consent_string": V1},
        {"consent_string": "COvF"},
        {"consent_string": "CO" + "A" * 499},
        {"consent_string": EXAMPLE + "="},
        {"consent_string": EXAMPLE, "consent_timestamp": datetime(2024, 5, 1)},  # no offset: not RFC 3339
        {"consent_string": EXAMPLE, "vendors": {"vendor_123": 1}},
        {"consent_string": EXAMPLE, "purposes": {"sms_marketing": True}},
        {"consent_string": EXAMPLE, "version": 2},
        {"consent_string": EXAMPLE, "tcf": "2"},
    ],
)
def test_consent_reject(consent: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Consent.model_validate(consent)


def test_update_serializes_timestamp_as_iso_and_omits_unset_fields() -> None:
    update = CustomerConsentUpdate(consent=Consent(consent_string=EXAMPLE, consent_timestamp=WHEN))
    assert update.model_dump(mode="json", exclude_none=True) == {
        "consent": {"consent_string": EXAMPLE, "consent_timestamp": "2024-05-01T12:00:00Z"}
    }
    with pytest.raises(ValidationError):
        CustomerConsentUpdate.model_validate({})


def test_responses_parse_json_and_tolerate_extra_envelope_keys() -> None:
    consent = {
        "consent_string": EXAMPLE,
        "consent_timestamp": "2024-05-01T12:00:00Z",
        "purposes": {"email_marketing": True},
    }
    body = json.dumps({"data": {"consent": consent}, "request_id": "r1"})
    consent = ConsentResponse.model_validate_json(body).data.consent
    assert consent.consent_timestamp == WHEN and consent.purposes == ConsentPurposes(email_marketing=True)
    assert AuthorizeResponse.model_validate_json('{"data": "eyJ.jwt"}').data == "eyJ.jwt"
    error = ErrorBody.model_validate_json('{"error": "Invalid consent data", "details": "bad string"}')
    assert (error.error, error.details) == ("Invalid consent data", "bad string")


@pytest.mark.parametrize("body", ['{"data": ""}', "{}", '{"data": null}', '{"error": "x"}'])
def test_authorize_response_needs_a_token(body: str) -> None:
    with pytest.raises(ValidationError):
        AuthorizeResponse.model_validate_json(body)

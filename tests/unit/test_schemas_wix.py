"""The Wix wire models enforce the documented request rules, and read Wix's answers tolerantly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.wix import (
    ConfirmationSource,
    ConsentState,
    ErrorBody,
    GetByResponse,
    GetResponse,
    IdentifierType,
    MarketingConsent,
    OptInLevel,
    RevokeSource,
    UpdateRequest,
    UpsertRequest,
    received,
)

EMAIL = {"type": "EMAIL", "email": "ana@example.com"}
PHONE = {"type": "PHONE", "phone": "+14155550100"}
CONFIRMATION = {"source": "FORM", "updatedDate": "2024-05-01T12:00:00Z", "optInLevel": "SINGLE_CONFIRMATION"}
DOUBLE = {"source": "FORM", "optInLevel": "DOUBLE_CONFIRMATION"}
REVOKE = {"source": "REVOKE_LINK", "description": "unsubscribed"}


def consent(**fields: Any) -> dict[str, Any]:
    return {"details": EMAIL, **fields}


ACCEPTED = {
    "confirmed email": consent(state="CONFIRMED", lastConfirmationActivity=CONFIRMATION),
    "revoked phone": {"details": PHONE, "state": "REVOKED", "lastRevokeActivity": REVOKE},
    "pending double opt-in": consent(state="PENDING", lastConfirmationActivity=DOUBLE),
    "confirmed after double opt-in": consent(state="CONFIRMED", lastConfirmationActivity=DOUBLE),
    "never confirmed needs no activity": consent(state="NEVER_CONFIRMED"),
    "state defaults to UNKNOWN_STATE": consent(),
    "extended fields": consent(extendedFields={"namespaces": {"@acme/app": {"tier": "gold"}}}),
}

REJECTED = {
    "email channel without email": ({"details": {"type": "EMAIL"}}, "needs an email"),
    "email channel with a phone too": ({"details": {**EMAIL, "phone": "+14155550100"}}, "no phone"),
    "phone channel with an email": ({"details": {**PHONE, "email": "ana@example.com"}}, "no email"),
    "phone not E.164": ({"details": {"type": "PHONE", "phone": "4155550100"}}, "E.164"),
    "phone with a leading zero": ({"details": {"type": "PHONE", "phone": "+0155550100"}}, "E.164"),
    "unknown channel": ({"details": {"type": "UNKNOWN_TYPE", "email": "a@b.c"}}, "EMAIL or PHONE"),
    "confirmed without activity": (consent(state="CONFIRMED"), "needs lastConfirmationActivity"),
    "pending without activity": (consent(state="PENDING"), "needs lastConfirmationActivity"),
    "pending with single opt-in": (
        consent(state="PENDING", lastConfirmationActivity=CONFIRMATION),
        "DOUBLE_CONFIRMATION",
    ),
    "revoked without revoke activity": (
        consent(state="REVOKED", lastConfirmationActivity=CONFIRMATION),
        "needs lastRevokeActivity",
    ),
    "state outside the enum": (consent(state="OPTED_IN"), "state"),
    "revoke source on a confirmation": (
        consent(state="CONFIRMED", lastConfirmationActivity={"source": "REVOKE_LINK"}),
        "source",
    ),
    "unknown field": (consent(colour="blue"), "Extra inputs are not permitted"),
    "snake_case field": (consent(last_revoke_activity=REVOKE), "Extra inputs are not permitted"),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_consent_accepted(data: dict[str, Any]) -> None:
    parsed = MarketingConsent.model_validate(data)
    assert parsed.model_dump(mode="json", exclude_unset=True) == data, "read as sent: nothing dropped or changed"
    assert parsed.state is ConsentState(data.get("state", "UNKNOWN_STATE"))
    assert parsed.details.type is IdentifierType(data["details"]["type"])


def test_an_activity_is_read_into_its_types() -> None:
    activity = MarketingConsent.model_validate(ACCEPTED["confirmed email"]).lastConfirmationActivity
    assert activity is not None
    assert activity.updatedDate == datetime(2024, 5, 1, 12, tzinfo=UTC) and activity.updatedDate.utcoffset() is not None
    assert (activity.source, activity.optInLevel) == (ConfirmationSource.FORM, OptInLevel.SINGLE_CONFIRMATION)


@pytest.mark.parametrize(("data", "reason"), REJECTED.values(), ids=REJECTED.keys())
def test_consent_rejected(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        MarketingConsent.model_validate(data)


def test_revision_is_text_even_when_sent_as_a_number() -> None:
    """The doc's own example sends ``"revision": 3``; the schema says string."""
    assert MarketingConsent.model_validate(consent(revision=3)).revision == "3"


def update(**fields: Any) -> dict[str, Any]:
    body = {
        "marketingConsent": consent(id="c1", revision="3", state="REVOKED", lastRevokeActivity=REVOKE),
        "mask": {"paths": ["state", "lastRevokeActivity"]},
    }
    body["marketingConsent"].update(fields.pop("marketingConsent", {}))
    return {**body, **fields}


UPDATES_REJECTED = {
    "no id": (update(marketingConsent={"id": None}), "id and marketingConsent.revision"),
    "no revision": (update(marketingConsent={"revision": None}), "marketingConsent.revision"),
    "no mask": ({"marketingConsent": update()["marketingConsent"]}, "mask"),
    "empty mask": (update(mask={"paths": []}), "at least 1 item"),
    "no state": (
        {"marketingConsent": {"id": "c1", "revision": "3", "details": EMAIL}, "mask": {"paths": ["state"]}},
        "state is required",
    ),
    "EMAIL to UNKNOWN_STATE": (
        update(marketingConsent={"state": "UNKNOWN_STATE", "lastRevokeActivity": None}),
        "ignores an update of an EMAIL consent to UNKNOWN_STATE",
    ),
    "no details": (
        {"marketingConsent": {"id": "c1", "revision": "3"}, "mask": {"paths": ["state"]}},
        "details",
    ),
    "unknown top-level field": (update(fieldMask=["state"]), "Extra inputs are not permitted"),
}


def test_update_accepted() -> None:
    parsed = UpdateRequest.model_validate(update())
    assert parsed.model_dump(mode="json", exclude_unset=True) == update()
    consent = parsed.marketingConsent
    assert (consent.id, consent.revision, consent.state) == ("c1", "3", ConsentState.REVOKED)
    assert (consent.details.type, consent.details.email) == (IdentifierType.EMAIL, "ana@example.com")
    assert consent.lastRevokeActivity is not None and consent.lastRevokeActivity.source is RevokeSource.REVOKE_LINK
    assert parsed.mask.paths == ["state", "lastRevokeActivity"]


def test_phone_update_to_unknown_state_is_allowed() -> None:
    """Only EMAIL consents silently keep their state ("For existing marketing consents with EMAIL")."""
    data = update(marketingConsent={"details": PHONE, "state": "UNKNOWN_STATE", "lastRevokeActivity": None})
    consent = UpdateRequest.model_validate(data).marketingConsent
    assert consent.state is ConsentState.UNKNOWN_STATE and "state" in consent.model_fields_set
    assert (consent.details.type, consent.details.phone, consent.details.email) == (
        IdentifierType.PHONE,
        "+14155550100",
        None,
    )
    assert consent.lastRevokeActivity is None and (consent.id, consent.revision) == ("c1", "3")


@pytest.mark.parametrize(("data", "reason"), UPDATES_REJECTED.values(), ids=UPDATES_REJECTED.keys())
def test_update_rejected(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        UpdateRequest.model_validate(data)


def test_upsert_needs_an_explicit_state() -> None:
    upsert = UpsertRequest.model_validate({"marketingConsent": consent(state="UNKNOWN_STATE")})
    assert upsert.marketingConsent.state is ConsentState.UNKNOWN_STATE
    with pytest.raises(ValidationError, match="state is required"):
        UpsertRequest.model_validate({"marketingConsent": consent()})


def test_upsert_checks_the_consent_rules() -> None:
    with pytest.raises(ValidationError, match="needs lastConfirmationActivity"):
        UpsertRequest.model_validate({"marketingConsent": consent(state="CONFIRMED")})


STORED = {
    "id": "c1",
    "revision": "7",
    "details": EMAIL,
    "state": "CONFIRMED",
    "lastConfirmationActivity": {"source": "UNKNOWN_SOURCE", "updatedDate": "2024-05-01T12:00:00.123Z"},
    "createdDate": "2024-05-01T12:00:00.123Z",
}


def test_answers_ignore_new_fields() -> None:
    body = {"marketingConsent": {**STORED, "brandNew": 1, "details": {**EMAIL, "x": 2}}, "meta": {}}
    assert received(GetResponse, body).marketingConsent.revision == "7"


def test_answers_skip_the_request_rules() -> None:
    """Wix decides what it stores: a CONFIRMED consent without an activity still reads."""
    stored = {key: value for key, value in STORED.items() if key != "lastConfirmationActivity"}
    assert received(GetResponse, {"marketingConsent": stored}).marketingConsent.id == "c1"
    with pytest.raises(ValidationError):
        GetResponse.model_validate({"marketingConsent": stored})


@pytest.mark.parametrize("missing", ["id", "revision"])
def test_a_stored_consent_has_id_and_revision(missing: str) -> None:
    stored = {key: value for key, value in STORED.items() if key != missing}
    with pytest.raises(ValidationError, match=missing):
        received(GetResponse, {"marketingConsent": stored})


def test_get_by_answer() -> None:
    body = {"marketingConsent": STORED, "communicationEligibility": {"granted": True}}
    answer = received(GetByResponse, body)
    assert answer.communicationEligibility is not None and answer.communicationEligibility.granted
    assert received(GetByResponse, {}).marketingConsent is None


def test_error_bodies() -> None:
    violation = {"field": "details.email", "description": "must be an email", "ruleName": "FORMAT"}
    validation = received(
        ErrorBody, {"message": "bad", "details": {"validationError": {"fieldViolations": [violation]}}}
    )
    assert validation.details is not None and validation.details.validationError is not None
    assert validation.details.validationError.fieldViolations[0].field == "details.email"
    application = {"code": "ALREADY_EXISTS", "description": "one per email", "data": {}}
    assert received(ErrorBody, {"details": {"applicationError": application}}).message == ""
    assert received(ErrorBody, {}).details is None  # system errors have an empty body

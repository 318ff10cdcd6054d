"""The normalized decision model: what it accepts and what it refuses, by field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.consent import DEFAULT_PURPOSES, Decision, PurposeState, most_restrictive

CONTEXT = {"purposes": DEFAULT_PURPOSES}
VALID: dict[str, Any] = {
    "subject": {"id": "cust-42", "email": "ana@example.com", "phone": "+14155550100"},
    "purposes": {"email_marketing": "granted", "push_notifications": "denied"},
    "vendors": {"meta": True},
    "tcf_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
    "occurred_at": "2026-11-23T10:00:00Z",
    "expires_at": None,
    "source": "web",
    "note": "signup form",
}


def parse(body: dict[str, Any]) -> Decision:
    return Decision.model_validate_json(json.dumps(body), context=CONTEXT)


def with_(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def test_the_documented_example_is_valid() -> None:
    decision = parse(VALID)
    assert decision.purposes["push_notifications"] is PurposeState.denied
    assert decision.occurred_at.utcoffset() is not None


def test_only_subject_id_purposes_and_occurred_at_are_required() -> None:
    decision = parse(
        {"subject": {"id": "c"}, "purposes": {"analytics": "pending"}, "occurred_at": VALID["occurred_at"]}
    )
    assert decision.source == "web" and decision.vendors is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_(purposes={"telepathy": "granted"}), "purposes"),
        (with_(purposes={"email_marketing": "yes"}), "purposes.email_marketing"),
        (with_(purposes={}), "purposes"),
        (with_(subject={"id": "c", "email": "not-an-email"}), "subject.email"),
        (with_(subject={"id": "c", "phone": "4155550100"}), "subject.phone"),
        (with_(subject={"email": "a@example.com"}), "subject.id"),
        (with_(subject={"id": ""}), "subject.id"),
        ({k: v for k, v in VALID.items() if k != "subject"}, "subject"),
        (with_(occurred_at="2026-11-23T10:00:00"), "occurred_at"),
        (with_(occurred_at=1700000000), "occurred_at"),
        (with_(vendors={"meta": 1}), "vendors.meta"),
        (with_(source="carrier-pigeon"), "source"),
        (with_(note=7), "note"),
        (with_(colour="blue"), "colour"),
        (with_(subject={"id": "c", "nickname": "ana"}), "subject.nickname"),
        (with_(expires_at="2026-11-22T10:00:00Z"), "expires_at"),
    ],
)
def test_bad_input_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(body)
    fields = {".".join(str(p) for p in error["loc"]) for error in caught.value.errors()}
    assert field in fields


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["granted"], "granted"),
        (["granted", "pending"], "pending"),
        (["pending", "denied", "granted"], "denied"),
    ],
)
def test_most_restrictive_state_wins_when_purposes_share_a_provider_term(states: list[str], expected: str) -> None:
    assert most_restrictive([PurposeState(s) for s in states]) is PurposeState(expected)

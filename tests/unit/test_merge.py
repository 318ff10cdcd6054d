"""The merge rule, without a database: newest occurred_at wins per purpose, ties go to the
later-received decision, and the newest decision owns the subject-level fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas.consent import Decision, PurposeRecord, PurposeState, SubjectState, merge

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def decision(minutes: int, **fields: Any) -> Decision:
    body: dict[str, Any] = {
        "subject": {"id": "cust-1", **fields.pop("subject", {})},
        "purposes": fields.pop("purposes", {"email_marketing": "granted"}),
        "occurred_at": T0 + timedelta(minutes=minutes),
        **fields,
    }
    return Decision.model_validate(body, strict=False)


def apply(*decisions: Decision) -> SubjectState:
    state: SubjectState | None = None
    for each in decisions:
        state, _ = merge(state, each)
    assert state is not None
    return state


def test_a_new_subject_takes_the_decision_whole() -> None:
    state, effective = merge(
        None, decision(0, subject={"email": "ana@example.com"}, vendors={"meta": True}, tcf_string="COabc", note="form")
    )
    assert effective == ["email_marketing"]
    assert (state.email, state.tcf_string, state.vendors, state.note) == (
        "ana@example.com",
        "COabc",
        {"meta": True},
        "form",
    )
    assert state.purposes["email_marketing"].state is PurposeState.granted


def test_a_late_older_decision_wins_nothing_but_fills_unknown_fields() -> None:
    newer = merge(None, decision(10, purposes={"email_marketing": "denied"}, note="newer"))[0]
    older = decision(
        5,
        purposes={"email_marketing": "granted", "sms_marketing": "granted"},
        subject={"phone": "+14155550100"},
        note="older",
    )
    state, effective = merge(newer, older)
    assert effective == ["sms_marketing"], "a purpose nobody decided before is the older decision's to win"
    assert state.purposes["email_marketing"].state is PurposeState.denied
    assert (state.phone, state.note, state.occurred_at) == ("+14155550100", "newer", T0 + timedelta(minutes=10))


def test_a_tie_goes_to_the_later_received_decision() -> None:
    state = apply(
        decision(0, purposes={"email_marketing": "granted"}), decision(0, purposes={"email_marketing": "denied"})
    )
    assert state.purposes["email_marketing"].state is PurposeState.denied


def test_the_newest_decision_owns_subject_fields_and_vendors_accumulate() -> None:
    state = apply(
        decision(0, vendors={"meta": True}, expires_at=T0 + timedelta(days=1), note="first"),
        decision(1, vendors={"google": False}),
    )
    assert state.vendors == {"meta": True, "google": False}
    assert (state.note, state.expires_at) == (None, None), "the newest decision's own note and expiry, even unset"


def test_times_are_kept_in_utc_whatever_offset_the_caller_used() -> None:
    plus_two = timezone(timedelta(hours=2))
    state = apply(decision(0, occurred_at=datetime(2026, 11, 23, 12, 0, tzinfo=plus_two)))
    assert state.occurred_at == T0 and state.occurred_at.tzinfo is UTC
    assert state.purposes["email_marketing"].occurred_at.tzinfo is UTC


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(list(PurposeState))), min_size=1, max_size=12))
def test_whatever_the_arrival_order_the_newest_decision_wins(arrivals: list[tuple[int, PurposeState]]) -> None:
    """``arrivals`` is the receive order: newest minute wins, and among equals the last received."""
    state = apply(*(decision(minutes, purposes={"email_marketing": value.value}) for minutes, value in arrivals))
    minutes, value = max(reversed(arrivals), key=lambda arrival: arrival[0])
    assert state.purposes["email_marketing"] == PurposeRecord(state=value, occurred_at=T0 + timedelta(minutes=minutes))

"""Provenance: what the gateway wrote to a provider, kept so a read-back never takes it for a person's change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.rules.provenance import KEPT, Provenance
from schemas.consent import PurposeState

T1 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
T2, T3 = T1 + timedelta(minutes=10), T1 + timedelta(minutes=20)
GRANTED, DENIED = PurposeState.granted, PurposeState.denied


def pushed(*writes: tuple[PurposeState, datetime], acknowledged: bool, term: str = "email") -> Provenance:
    found = Provenance()
    for write in writes:
        found = found.after_push([{term: write}], acknowledged)
    return found


def test_every_write_is_kept_and_an_acknowledged_one_is_what_the_provider_holds() -> None:
    found = pushed((GRANTED, T1), (DENIED, T2), acknowledged=True)
    assert found.terms["email"].sent == ((GRANTED, T1), (DENIED, T2))
    assert found.terms["email"].holding() == ((DENIED, T2),)
    failed = found.after_push([{"email": (GRANTED, T3)}, {"email": (GRANTED, T3)}], acknowledged=False)
    assert failed.terms["email"].holding() == ((DENIED, T2), (GRANTED, T3)), "the acknowledged one, then each try once"
    again = failed.after_push([{"email": (DENIED, T2)}], acknowledged=False)
    assert again.terms["email"].holding() == ((GRANTED, T3), (DENIED, T2)), "sent again: it moves to the end"


def test_a_term_a_push_did_not_write_keeps_its_writes() -> None:
    found = pushed((GRANTED, T1), acknowledged=True).after_push([{"push": (DENIED, T2)}], acknowledged=True)
    assert found.terms["email"].holding() == ((GRANTED, T1),) and found.terms["push"].holding() == ((DENIED, T2),)


def test_writes_are_capped_to_the_newest() -> None:
    moments = [T1 + timedelta(seconds=n) for n in range(KEPT + 10)]
    found = pushed(*((DENIED, moment) for moment in moments), acknowledged=False)
    assert found.terms["email"].sent == tuple((DENIED, moment) for moment in moments[-KEPT:])
    assert len(found.terms["email"].holding()) == KEPT


def test_it_round_trips_through_json() -> None:
    found = pushed((GRANTED, T1), (DENIED, T2), acknowledged=True).after_push([{"email": (GRANTED, T3)}], False)
    assert Provenance.from_json(found.to_json()) == found
    assert Provenance.from_json(None) == Provenance()


def test_a_time_the_gateway_wrote_is_its_own_whatever_the_state() -> None:
    found = pushed((GRANTED, T1), (DENIED, T2), acknowledged=True, term="EMAIL")
    assert found.ours("EMAIL", GRANTED, T1, record_stamped=False), "an older write, not held any more: still its own"
    assert found.ours("EMAIL", DENIED, T1 + timedelta(microseconds=400), record_stamped=False), "to the millisecond"
    assert not found.ours("EMAIL", GRANTED, T3, record_stamped=False), "another time at Wix is a change there"
    assert not found.ours("EMAIL", GRANTED, None, record_stamped=False)
    assert not found.ours("PHONE", GRANTED, T1, record_stamped=False), "per term"


def test_one_time_per_record_dates_the_term_someone_changed_not_the_opt_ins_the_gateway_left() -> None:
    found = pushed((GRANTED, T1), acknowledged=True).after_push([{"email": (DENIED, T2)}], acknowledged=False)
    assert found.ours("email", GRANTED, T3, record_stamped=True), "an opt-in it may have left there, re-stamped"
    assert not found.ours("email", DENIED, T3, record_stamped=True), "an opt-out: the protective reading"
    assert not found.ours("email", GRANTED, T3, record_stamped=False), "per-term times date the term itself"
    later = pushed((GRANTED, T1), (DENIED, T2), acknowledged=True)
    assert not later.ours("email", GRANTED, T3, record_stamped=True), "an opt-in it no longer holds there is news"


def test_once_adopted_from_there_none_of_its_writes_is_held_but_their_times_are_still_its_own() -> None:
    found = pushed((GRANTED, T1), acknowledged=True).disowned()
    assert not found.ours("email", GRANTED, T3, record_stamped=True), "the person's own opt-in there"
    assert found.ours("email", GRANTED, T1, record_stamped=True), "the gateway's old write come back"

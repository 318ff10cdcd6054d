"""The drift rules, pure: a row's status, the term-by-term difference, what newest_wins adopts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import Observation
from adapters.masivo import MasivoAdapter, MasivoSettings
from adapters.wix import WixAdapter, WixSettings
from gateway.rules.drift import Judgement, Known, difference, judge, status
from gateway.rules.provenance import Provenance
from schemas.api import DeliveryStatus, SyncStatus, TermDifference
from schemas.consent import PurposeRecord, PurposeState, Shared, SubjectState
from tests.fakes import fake_adapter

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WIX = WixAdapter(WixSettings(api_key="k" * 12, site_id="s"))
MASIVO = MasivoAdapter(MasivoSettings(api_key="k" * 12))
FAKE = fake_adapter()  # no read API


def subject(**purposes: str) -> SubjectState:
    return SubjectState(
        subject_id="c",
        email="c@example.com",
        purposes={p: PurposeRecord(state=PurposeState(s), occurred_at=T0) for p, s in purposes.items()},
        occurred_at=T0,
    )


CONFIRMED = {"EMAIL": {"state": "CONFIRMED", "email": "c@example.com"}}
REVOKED = {"EMAIL": {"state": "REVOKED", "email": "c@example.com"}}
LATER = T0 + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("adapter", "known", "last", "expected"),
    [
        (WIX, Known(CONFIRMED, T0), None, SyncStatus.in_sync),
        (WIX, Known(CONFIRMED, T0, REVOKED, LATER), None, SyncStatus.diverged),
        (WIX, Known(CONFIRMED, LATER, REVOKED, T0), None, SyncStatus.in_sync),  # pushed after the read
        (WIX, Known(CONFIRMED, T0, REVOKED, LATER), DeliveryStatus.retrying, SyncStatus.pending),
        (WIX, Known(REVOKED, T0), DeliveryStatus.dead, SyncStatus.failed),
        (WIX, Known(), None, SyncStatus.pending),
        (WIX, Known(None, None, CONFIRMED, T0), None, SyncStatus.in_sync),
        (FAKE, Known({"email": "granted"}, T0), None, SyncStatus.unobservable),
        (FAKE, Known({"email": "denied"}, T0), None, SyncStatus.pending),
        (FAKE, Known({"email": "denied"}, T0), DeliveryStatus.dead, SyncStatus.failed),
    ],
    ids=[
        "acknowledged",
        "read-back-differs",
        "ack-after-read",
        "push-under-way",
        "dead",
        "nothing-known",
        "read-back-agrees",
        "unobservable",
        "unobservable-owes-push",
        "unobservable-dead",
    ],
)
def test_a_rows_status(adapter: object, known: Known, last: DeliveryStatus | None, expected: SyncStatus) -> None:
    desired = FAKE.project(subject(email_marketing="granted")) if adapter is FAKE else CONFIRMED
    assert status(adapter, desired, known, last) is expected  # type: ignore[arg-type]


def test_an_unobservable_provider_is_never_in_sync() -> None:
    for known in (Known({"email": "granted"}, T0), Known({"email": "granted"}, T0, {"email": "granted"}, LATER)):
        assert status(FAKE, {"email": "granted"}, known, None) is SyncStatus.unobservable


def test_the_difference_is_term_by_term() -> None:
    desired = {"purposes": {"email_marketing": True, "coupon_campaigns": False}, "customer_id": "c"}
    held = {"purposes": {"email_marketing": False, "coupon_campaigns": False}, "customer_id": "c", "extra": 1}
    assert difference(desired, held) == [
        TermDifference(term="extra", desired=None, held=1),
        TermDifference(term="purposes.email_marketing", desired=True, held=False),
    ]
    assert difference(CONFIRMED, None) == [
        TermDifference(term="EMAIL.email", desired="c@example.com", held=None),
        TermDifference(term="EMAIL.state", desired="CONFIRMED", held=None),
    ]


NO_WRITES = Provenance()
SKEW = timedelta(minutes=5)
READ = LATER + timedelta(seconds=1)


def judged(adapter: object, state: SubjectState, seen: Observation, writes: Provenance = NO_WRITES) -> Judgement:
    return judge(adapter, state, seen, writes, READ, SKEW)  # type: ignore[arg-type]


def test_a_newer_revoke_is_adopted_with_the_providers_time() -> None:
    adopted = judged(WIX, subject(email_marketing="granted"), Observation(held=REVOKED, changed_at={"EMAIL": LATER}))
    assert dict(adopted.decisions) == {LATER: {"email_marketing": PurposeState.denied}} and not adopted.not_adopted


def test_an_older_or_undated_provider_change_is_not_adopted() -> None:
    state = subject(email_marketing="granted")
    older = judged(WIX, state, Observation(held=REVOKED, changed_at={"EMAIL": T0 - timedelta(minutes=1)}))
    undated = judged(WIX, state, Observation(held=REVOKED))
    assert not older.decisions and older.not_adopted == {"EMAIL": "older than the gateway's decision"}
    assert not undated.decisions and "no provider time" in undated.not_adopted["EMAIL"]


def test_a_provider_time_past_the_allowed_skew_is_not_adopted() -> None:
    state = subject(email_marketing="denied")
    ahead = Observation(held=CONFIRMED, changed_at={"EMAIL": READ + SKEW + timedelta(seconds=1)})
    found = judged(WIX, state, ahead)
    assert not found.decisions and "provider time in the future" in found.not_adopted["EMAIL"]
    within = Observation(held=CONFIRMED, changed_at={"EMAIL": READ + SKEW})
    assert dict(judged(WIX, state, within).decisions) == {READ + SKEW: {"email_marketing": PurposeState.granted}}


def test_the_gateways_own_write_is_never_a_change_whatever_its_time() -> None:
    state = subject(email_marketing="denied")
    ours = Provenance().after_push([{"EMAIL": (PurposeState.granted, LATER)}], acknowledged=True)
    found = judged(WIX, state, Observation(held=CONFIRMED, changed_at={"EMAIL": LATER}), ours)
    assert not found.decisions and found.not_theirs == {"EMAIL"} and "own write" in found.not_adopted["EMAIL"]


def test_an_address_others_hold_is_never_adopted_and_its_opt_out_is_kept() -> None:
    granted = {"email_marketing": PurposeRecord(state=PurposeState.granted, occurred_at=T0)}
    other = Shared(subject_ids=["d"], count=1, purposes=granted)
    state = subject(email_marketing="granted").model_copy(update={"shared": {"email": other}})
    out = judged(WIX, state, Observation(held=REVOKED, changed_at={"EMAIL": LATER}))
    assert not out.decisions and out.kept == {"EMAIL"} and out.not_theirs == {"EMAIL"}
    assert "shared address (also held by d)" in out.not_adopted["EMAIL"]
    many = state.model_copy(update={"shared": {"email": Shared(subject_ids=["d", "e"], count=40, purposes=granted)}})
    assert (
        "also held by d, e and 38 more"
        in judged(WIX, many, Observation(held=REVOKED, changed_at={"EMAIL": LATER})).not_adopted["EMAIL"]
    )
    denied = subject(email_marketing="denied").model_copy(update={"shared": {"email": other}})
    grant = judged(WIX, denied, Observation(held=CONFIRMED, changed_at={"EMAIL": LATER}))
    assert not grant.decisions and not grant.kept, "an opt-in on a shared address is pushed over"


def test_an_opt_out_applies_to_every_purpose_mapped_to_the_term_an_opt_in_only_one_to_one() -> None:
    shared = WixAdapter(
        WixSettings(api_key="k" * 12, site_id="s", purposes={"email_marketing": "EMAIL", "link_tracking": "EMAIL"})
    )
    state = subject(email_marketing="granted", link_tracking="granted")
    out = judged(shared, state, Observation(held=REVOKED, changed_at={"EMAIL": LATER}))
    assert dict(out.decisions) == {LATER: {"email_marketing": "denied", "link_tracking": "denied"}}
    denied = subject(email_marketing="denied", link_tracking="denied")
    opt_in = judged(shared, denied, Observation(held=CONFIRMED, changed_at={"EMAIL": LATER}))
    assert not opt_in.decisions and "several purposes" in opt_in.not_adopted["EMAIL"]


def test_masivo_terms_are_its_purposes_and_its_one_time_dates_only_what_changed() -> None:
    state = subject(email_marketing="granted", push_notifications="denied")
    held = MASIVO.project(state)
    held["purposes"] = held["purposes"] | {"email_marketing": False, "push_notifications": True}
    stamp = dict.fromkeys(held["purposes"], LATER)
    ours = Provenance().after_push(
        [{"push_notifications": (PurposeState.denied, T0)}, {"push_notifications": (PurposeState.granted, T0)}], False
    )
    out = judged(MASIVO, state, Observation(held=held, changed_at=stamp), ours)
    assert dict(out.decisions) == {LATER: {"email_marketing": PurposeState.denied}}
    assert out.not_adopted == {"push_notifications": "the gateway's own write, read back"}

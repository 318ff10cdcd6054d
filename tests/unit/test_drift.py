"""The drift rules, pure: a row's status, the term-by-term difference, what newest_wins adopts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import Observation
from adapters.masivo import MasivoAdapter, MasivoSettings
from adapters.wix import WixAdapter, WixSettings
from gateway.drift import Known, adoption, difference, status
from schemas.api import DeliveryStatus, SyncStatus, TermDifference
from schemas.consent import PurposeRecord, PurposeState, SubjectState
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


def test_a_newer_revoke_is_adopted_with_the_providers_time() -> None:
    adopted = adoption(WIX, subject(email_marketing="granted"), Observation(held=REVOKED, changed_at={"EMAIL": LATER}))
    assert dict(adopted.decisions) == {LATER: {"email_marketing": PurposeState.denied}} and not adopted.reported


def test_an_older_or_undated_provider_change_is_not_adopted() -> None:
    state = subject(email_marketing="granted")
    older = Observation(held=REVOKED, changed_at={"EMAIL": T0 - timedelta(minutes=1)})
    undated = Observation(held=REVOKED)
    assert not adoption(WIX, state, older).decisions and not adoption(WIX, state, undated).decisions


def test_an_opt_out_applies_to_every_purpose_mapped_to_the_term_an_opt_in_only_one_to_one() -> None:
    shared = WixAdapter(
        WixSettings(api_key="k" * 12, site_id="s", purposes={"email_marketing": "EMAIL", "link_tracking": "EMAIL"})
    )
    state = subject(email_marketing="granted", link_tracking="granted")
    out = adoption(shared, state, Observation(held=REVOKED, changed_at={"EMAIL": LATER}))
    assert dict(out.decisions) == {LATER: {"email_marketing": "denied", "link_tracking": "denied"}}
    denied = subject(email_marketing="denied", link_tracking="denied")
    opt_in = adoption(shared, denied, Observation(held=CONFIRMED, changed_at={"EMAIL": LATER}))
    assert not opt_in.decisions and "EMAIL" in opt_in.reported


def test_masivo_terms_are_its_purposes() -> None:
    held = MASIVO.project(subject(email_marketing="granted"))
    held["purposes"]["email_marketing"] = False
    out = adoption(
        MASIVO,
        subject(email_marketing="granted"),
        Observation(held=held, changed_at=dict.fromkeys(held["purposes"], LATER)),
    )
    assert dict(out.decisions) == {LATER: {"email_marketing": PurposeState.denied}}

"""The store: newest-wins merge, the ledger, and all-or-nothing recording (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.base import Projection
from gateway.store import Store
from gateway.store.outbox import Outcome
from gateway.store.tables import decisions, deliveries, subjects
from schemas.api import DeliveryStatus
from schemas.consent import Decision, PurposeState, SubjectState
from tests.fakes import FakeAdapter, fake_adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def decision(minutes: int, subject: str = "cust-1", **purposes: str) -> Decision:
    return Decision.model_validate(
        {
            "subject": {"id": subject, "email": "ana@example.com"},
            "purposes": purposes,
            "occurred_at": NOW - timedelta(hours=1) + timedelta(minutes=minutes),
            "tcf_string": f"tcf-{minutes}",
        },
        strict=False,
    )


async def count(store: Store, table: Any) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_newest_occurred_at_wins_per_purpose(store: Store) -> None:
    adapters = {"fake": fake_adapter()}
    await store.ledger.record(decision(10, email_marketing="granted", sms_marketing="granted"), adapters, NOW)
    late = await store.ledger.record(decision(5, email_marketing="denied", sms_marketing="denied"), adapters, NOW)
    newer = await store.ledger.record(decision(20, sms_marketing="denied"), adapters, NOW)

    state = await store.ledger.subject_state("cust-1")
    assert state is not None
    assert state.purposes["email_marketing"].state is PurposeState.granted
    assert state.purposes["sms_marketing"].state is PurposeState.denied
    assert late.effective_purposes == [] and late.superseded_purposes == ["email_marketing", "sms_marketing"]
    assert [d.status for d in late.deliveries] == [DeliveryStatus.skipped]
    assert newer.effective_purposes == ["sms_marketing"]
    assert state.tcf_string == "tcf-20", "the newest decision owns subject-level fields"
    assert await count(store, decisions) == 3, "a late decision is still kept in the ledger"


async def test_a_tie_on_occurred_at_goes_to_the_later_received_decision(store: Store) -> None:
    adapters = {"fake": fake_adapter()}
    await store.ledger.record(decision(10, email_marketing="granted"), adapters, NOW)
    second = await store.ledger.record(decision(10, email_marketing="denied"), adapters, NOW)
    state = await store.ledger.subject_state("cust-1")
    assert state is not None and state.purposes["email_marketing"].state is PurposeState.denied
    assert second.effective_purposes == ["email_marketing"]


async def test_a_provider_that_maps_nothing_in_the_decision_gets_a_skipped_delivery(store: Store) -> None:
    adapters = {"fake": fake_adapter(), "other": fake_adapter(purposes={"analytics": "analytics"})}
    recorded = await store.ledger.record(decision(1, email_marketing="granted"), adapters, NOW)
    statuses = {d.provider: d.status for d in recorded.deliveries}
    assert statuses == {"fake": DeliveryStatus.pending, "other": DeliveryStatus.skipped}


class ExplodingAdapter(FakeAdapter):
    def project(self, state: SubjectState) -> Projection:
        raise RuntimeError("boom")


async def test_a_decision_is_recorded_whole_or_not_at_all(store: Store) -> None:
    adapters = {"fake": fake_adapter(), "broken": ExplodingAdapter(FakeAdapter.Settings())}
    with pytest.raises(RuntimeError):
        await store.ledger.record(decision(1, email_marketing="granted"), adapters, NOW)
    for table in (decisions, subjects, deliveries):
        assert await count(store, table) == 0


async def test_decisions_coalesce_into_the_one_delivery_not_yet_sent(store: Store) -> None:
    adapters = {"fake": fake_adapter()}
    first = await store.ledger.record(decision(1, email_marketing="granted"), adapters, NOW)
    second = await store.ledger.record(decision(2, email_marketing="denied"), adapters, NOW)
    assert first.deliveries[0].id == second.deliveries[0].id
    assert await count(store, deliveries) == 1


async def test_a_delivery_in_flight_is_followed_by_one_more_never_overtaken(store: Store) -> None:
    adapters = {"fake": fake_adapter()}
    await store.ledger.record(decision(1, email_marketing="granted"), adapters, NOW)
    [in_flight] = await store.outbox.claim("fake", 10, NOW, lease_s=60, ladder_steps=7)
    newer = await store.ledger.record(decision(2, email_marketing="denied"), adapters, NOW)
    assert newer.deliveries[0].id != in_flight.id and newer.deliveries[0].status is DeliveryStatus.pending
    assert await store.outbox.claim("fake", 10, NOW, lease_s=60, ladder_steps=7) == [], "waits for the push in flight"

    await store.outbox.finish(in_flight, Outcome(DeliveryStatus.succeeded), NOW)
    [follow_up] = await store.outbox.claim("fake", 10, NOW, lease_s=60, ladder_steps=7)
    assert follow_up.id == newer.deliveries[0].id


async def test_the_subject_view_shows_each_providers_newest_delivery(store: Store) -> None:
    adapters = {"fake": fake_adapter(), "other": fake_adapter()}
    now = NOW
    for minutes, state in enumerate(["granted", "denied", "granted"]):
        recorded = await store.ledger.record(decision(minutes, email_marketing=state), adapters, now)
        for claim in await store.outbox.claim("fake", 10, now, lease_s=60, ladder_steps=7):
            await store.outbox.finish(claim, Outcome(DeliveryStatus.succeeded), now)
        now += timedelta(minutes=1)
    assert await count(store, deliveries) == 4, "fake: three sent one by one; other: one, coalesced"
    newest = await store.snapshots.last_deliveries(["cust-1"])
    latest = {d.provider: d.id for d in recorded.deliveries}
    fake, other = newest[("cust-1", "fake")], newest[("cust-1", "other")]
    assert (fake.id, fake.status) == (latest["fake"], DeliveryStatus.succeeded)
    assert (other.id, other.status) == (latest["other"], DeliveryStatus.pending)


async def test_claims_lease_rows_and_expired_leases_return(store: Store) -> None:
    adapters = {"fake": fake_adapter()}
    await store.ledger.record(decision(1, email_marketing="granted"), adapters, NOW)
    await store.ledger.record(decision(1, subject="cust-2", email_marketing="granted"), adapters, NOW)

    first = await store.outbox.claim("fake", 10, NOW, lease_s=60, ladder_steps=7)
    assert sorted(c.subject_id for c in first) == ["cust-1", "cust-2"]
    assert await store.outbox.claim("fake", 10, NOW, lease_s=60, ladder_steps=7) == []
    again = await store.outbox.claim("fake", 10, NOW + timedelta(seconds=61), lease_s=60, ladder_steps=7)
    assert len(again) == 2, "an expired lease (a crashed worker) makes rows claimable again"


async def test_concurrent_decisions_for_one_subject_never_lose_an_update(store: Store) -> None:
    adapters = {"fake": fake_adapter()}
    purposes = ["email_marketing", "sms_marketing", "analytics", "push_notifications"]
    await asyncio.gather(
        *(
            store.ledger.record(decision(i, **{purposes[i % 4]: "granted" if i % 3 else "denied"}), adapters, NOW)
            for i in range(24)
        )
    )
    state = await store.ledger.subject_state("cust-1")
    assert state is not None
    for index, purpose in enumerate(purposes):
        newest = max(i for i in range(24) if i % 4 == index)
        assert state.purposes[purpose].state is PurposeState("granted" if newest % 3 else "denied")
    assert await count(store, decisions) == 24

"""Lease fencing: an outcome recorded after its lease lapsed never decides what the provider holds.

A worker starved past its lease (a paused VM, two test suites on two cores) may see another worker
claim its pair and push a newer state, and its own older push may land last. Its outcome must not
count, and the pair must be pushed again, so the newest state is what the provider ends up holding.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from adapters.base import Ack
from gateway.config import Settings
from gateway.rules.provenance import Provenance
from gateway.service import Gateway
from gateway.store import Store
from gateway.store.outbox import Attempt, Claim, Ended, Outcome
from gateway.store.tables import deliveries, provider_state
from schemas.api import DeliveryStatus
from schemas.consent import Decision, PurposeState
from tests.fakes import fake_adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LEASE_S = 60.0
LAPSED = NOW + timedelta(seconds=LEASE_S + 1)
ADAPTERS = {"fake": fake_adapter()}
PUSHED = Outcome(DeliveryStatus.succeeded, [Attempt(NOW, 5, "succeeded", 200)])  # one request sent


def decision(minutes: int, email: str) -> Decision:
    occurred = NOW - timedelta(hours=1) + timedelta(minutes=minutes)
    return Decision.model_validate(
        {"subject": {"id": "cust-1"}, "purposes": {"email_marketing": email}, "occurred_at": occurred}, strict=False
    )


async def claim(store: Store, now: datetime) -> list[Claim]:
    return await store.outbox.claim("fake", 10, now, LEASE_S, ladder_steps=7)


async def rows(store: Store) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        found = await conn.execute(select(deliveries).order_by(deliveries.c.created_at, deliveries.c.id))
        return [dict(row) for row in found.mappings()]


async def held(store: Store) -> dict[str, Any]:
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(provider_state))).mappings().one()
        return dict(row)


def ack(email: str) -> Ack:
    return Ack(acknowledged={"email": email}, memo={})


# -- the outbox -----------------------------------------------------------------------------


async def test_a_finish_after_the_lease_was_taken_over_leaves_the_delivery_to_its_new_holder(store: Store) -> None:
    await store.ledger.record(decision(1, "granted"), ADAPTERS, NOW)
    [starved] = await claim(store, NOW)
    [taken_over] = await claim(store, LAPSED)
    assert taken_over.id == starved.id and taken_over.lease != starved.lease

    assert await store.outbox.finish(taken_over, PUSHED, LAPSED, ack("granted"))
    late = Outcome(DeliveryStatus.skipped)
    assert not await store.outbox.finish(starved, late, LAPSED), "its lease is another's now"
    [row] = await rows(store)
    assert row["status"] == DeliveryStatus.succeeded.value, "a late 'skipped' never overwrites 'succeeded'"
    assert (await held(store))["acknowledged"] == {"email": "granted"}, "a late finish with no request changes nothing"


async def test_a_lapsed_lease_counts_nothing_even_when_no_one_claimed_since(store: Store) -> None:
    await store.ledger.record(decision(1, "granted"), ADAPTERS, NOW)
    [starved] = await claim(store, NOW)
    assert not await store.outbox.renew(starved, LAPSED, LEASE_S), "a lapsed lease is not extended"

    assert not await store.outbox.finish(starved, PUSHED, LAPSED, ack("granted"))
    [row] = await rows(store)
    assert (row["status"], row["attempts"], row["lease_until"]) == (DeliveryStatus.pending.value, 1, None)
    assert (await held(store))["acknowledged"] == {}, "what the provider holds is unknown: the next push sends all"
    [again] = await claim(store, LAPSED)
    assert again.id == starved.id, "queued again, due now"


async def test_a_late_push_distrusts_the_other_pushs_acknowledgement_and_queues_the_pair_again(store: Store) -> None:
    await store.ledger.record(decision(1, "granted"), ADAPTERS, NOW)
    [starved] = await claim(store, NOW)
    [taken_over] = await claim(store, LAPSED)
    fence = (await store.outbox.acknowledged("cust-1", "fake")).fence  # read by the second push before it sends

    grant, denial = (PurposeState.granted, NOW), (PurposeState.denied, LAPSED)
    assert not await store.outbox.finish(starved, PUSHED, LAPSED, ack("granted"), sent=[{"email": grant}])
    assert await store.outbox.finish(taken_over, PUSHED, LAPSED, ack("denied"), sent=[{"email": denial}], fence=fence)
    state = await held(store)
    assert state["acknowledged"] == {}, "either push may have landed last"
    writes = Provenance.from_json(state["writes"]).terms["email"]
    assert writes.holding() == (grant, denial), "both writes are the gateway's own, and either may be held there"
    first, queued = await rows(store)
    assert (first["status"], queued["status"]) == (DeliveryStatus.succeeded.value, DeliveryStatus.pending.value)
    assert queued["decision_id"] == first["decision_id"]
    [again] = await claim(store, LAPSED)
    assert again.id == queued["id"]


async def test_a_late_push_makes_a_waiting_delivery_of_the_pair_due_instead_of_adding_one(store: Store) -> None:
    await store.ledger.record(decision(1, "granted"), ADAPTERS, NOW)
    [starved] = await claim(store, NOW)
    later = NOW + timedelta(seconds=1)
    await store.ledger.record(decision(2, "denied"), ADAPTERS, later)  # waits behind the push in flight
    [taken_over] = await claim(store, LAPSED)
    assert taken_over.id == starved.id
    assert await store.outbox.finish(taken_over, PUSHED, LAPSED, ack("denied"))
    async with store.engine.begin() as conn:  # the waiting one was put off: a retry
        put_off = deliveries.update().where(deliveries.c.status == "pending")
        await conn.execute(put_off.values(status="retrying", next_attempt_at=LAPSED + timedelta(hours=1)))

    assert not await store.outbox.finish(starved, PUSHED, LAPSED, ack("granted"))
    assert len(await rows(store)) == 2, "no third delivery"
    [again] = await claim(store, LAPSED)
    assert again.id != starved.id, "the waiting one is due now"


async def test_outcomes_recorded_together_each_count_by_their_own_lease(store: Store) -> None:
    """One transaction for a group (the worker's group commit): each outcome's answer is its own, in the
    order given, whatever order the pairs are written in."""
    for subject in ("cust-b", "cust-a"):
        occurred = NOW - timedelta(hours=1)
        body = {"subject": {"id": subject}, "purposes": {"email_marketing": "granted"}, "occurred_at": occurred}
        await store.ledger.record(Decision.model_validate(body, strict=False), ADAPTERS, NOW)
    starved = {c.subject_id: c for c in await claim(store, NOW)}
    assert await store.outbox.renew(starved["cust-b"], NOW + timedelta(seconds=30), LEASE_S)  # cust-b's holds
    [taken_over] = await claim(store, LAPSED)  # cust-a's ran out
    assert taken_over.subject_id == "cust-a"
    ended = [Ended(starved["cust-b"], PUSHED, ack("granted")), Ended(starved["cust-a"], PUSHED, ack("granted"))]
    assert await store.outbox.finish_many(ended, LAPSED) == [True, False]
    assert await store.outbox.finish_many([Ended(taken_over, PUSHED, ack("granted"))], LAPSED) == [True]


@pytest.mark.parametrize("starved_first", [True, False])
async def test_two_ends_of_one_pair_in_one_group_are_each_judged_by_their_own_lease(
    store: Store, starved_first: bool
) -> None:
    """A starved push and the push that took its delivery over may end in the same group commit: the same
    delivery under two leases. Only the holder's counts, and the second recorded reads what the first
    wrote: both writes kept, neither acknowledgement trusted, the pair queued again."""
    await store.ledger.record(decision(1, "granted"), ADAPTERS, NOW)
    [starved] = await claim(store, NOW)
    [taken_over] = await claim(store, LAPSED)
    fence = (await store.outbox.acknowledged("cust-1", "fake")).fence
    grant, denial = (PurposeState.granted, NOW), (PurposeState.denied, LAPSED)
    late = Ended(starved, PUSHED, ack("granted"), [{"email": grant}])
    holder = Ended(taken_over, PUSHED, ack("denied"), [{"email": denial}], fence)
    ended, counted = ([late, holder], [False, True]) if starved_first else ([holder, late], [True, False])

    assert await store.outbox.finish_many(ended, LAPSED) == counted
    state = await held(store)
    assert state["acknowledged"] == {}, "either push may have landed last"
    assert set(Provenance.from_json(state["writes"]).terms["email"].holding()) == {grant, denial}
    first, queued = await rows(store)
    assert (first["status"], queued["status"]) == (DeliveryStatus.succeeded.value, DeliveryStatus.pending.value)


# -- two workers, one starved ---------------------------------------------------------------


class Provider:
    """Holds what it was last sent per subject; the first request waits until ``release`` is set."""

    def __init__(self) -> None:
        self.holds: dict[str, dict[str, str]] = {}
        self.release = asyncio.Event()
        self.stalled = asyncio.Event()

    async def stalling(self, request: httpx.Request) -> httpx.Response:
        self.stalled.set()
        await self.release.wait()
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.holds[request.url.path.rsplit("/", 1)[-1]] = json.loads(request.content)
        return httpx.Response(200, json={})


class Forever:
    """A heartbeat that never beats: the starved worker's lease is never renewed."""

    async def __call__(self, seconds: float) -> None:
        await asyncio.Event().wait()


@pytest.fixture
async def clock() -> AsyncIterator[list[datetime]]:
    yield [NOW]


def worker_gateway(store: Store, clock: list[datetime], handler: Any) -> Gateway:
    gateway = Gateway(
        Settings(worker={"lease_s": LEASE_S}),
        store=store,
        adapters={"fake": fake_adapter(timeout_s=3600)},
        transports={"fake": httpx.MockTransport(handler)},
        clock=lambda: clock[0],
    )
    gateway.worker.beat = Forever()
    return gateway


async def test_an_older_push_landing_last_is_overwritten_by_the_newest_state(
    store: Store, clock: list[datetime]
) -> None:
    provider = Provider()
    starved = worker_gateway(store, clock, provider.stalling)
    other = worker_gateway(store, clock, provider.answer)
    await starved.record(decision(1, "granted"))
    await starved.worker.dispatch()
    await provider.stalled.wait()  # the grant is on its way, and the worker starves

    clock[0] = LAPSED
    await other.record(decision(2, "denied"))
    await other.worker.drain()  # takes the pair over and pushes the opt-out
    assert provider.holds["cust-1"] == {"email": "denied"}

    with capture_logs() as logs:
        provider.release.set()  # the grant lands last
        await asyncio.gather(*starved.worker._tasks)
    assert provider.holds["cust-1"] == {"email": "granted"}
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["delivery_outcome_too_late"]

    await other.worker.drain()
    assert provider.holds["cust-1"] == {"email": "denied"}, "the opt-out is what the provider holds in the end"
    subject = await other.subject("cust-1")
    assert subject is not None and subject.providers[0].acknowledged == {"email": "denied"}
    for gateway in (starved, other):
        await gateway.worker.stop()

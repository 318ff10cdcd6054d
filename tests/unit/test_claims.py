"""Claims from several workers at once: never two claimers on one subject×provider pair, and no
claimer waits for another (there is no global lock to wait on)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text

from gateway.store import Store
from gateway.store.outbox import Claim, Outcome
from gateway.store.tables import deliveries
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.fakes import fake_adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PAIRS = 120
CLAIMERS = 6


@pytest.fixture
async def claimers(database_url: str) -> AsyncIterator[list[Store]]:
    """One store (engine, pool) per worker, as separate processes would have."""
    stores = [Store.from_url(database_url) for _ in range(CLAIMERS)]
    yield stores
    for store in stores:
        await store.close()


async def two_open_rows_per_pair(store: Store) -> None:
    """Each pair gets a pending delivery and a second open one (as a replayed dead letter beside a
    newer pending delivery leaves it): both claimable at once."""
    adapters = {"fake": fake_adapter()}
    for index in range(PAIRS):
        decision = Decision.model_validate(
            {"subject": {"id": f"s-{index}"}, "purposes": {"email_marketing": "granted"}, "occurred_at": NOW},
            strict=False,
        )
        await store.ledger.record(decision, adapters, NOW)
    async with store.engine.begin() as conn:
        rows = (await conn.execute(select(deliveries))).mappings().all()
        await conn.execute(insert(deliveries), [{**row, "id": str(uuid.uuid4())} for row in rows])


async def test_concurrent_claimers_never_share_a_pair(claimers: list[Store]) -> None:
    await two_open_rows_per_pair(claimers[0])
    delivered = 0
    for _round in range(10):
        batches: list[list[Claim]] = await asyncio.gather(
            *(store.outbox.claim("fake", 25, NOW, 60, ladder_steps=7) for store in claimers)
        )
        holders: dict[str, set[int]] = {}
        for claimer, batch in enumerate(batches):
            for claim in batch:
                holders.setdefault(claim.subject_id, set()).add(claimer)
        shared = {pair: who for pair, who in holders.items() if len(who) > 1}
        assert not shared, f"pairs claimed by two workers at once: {shared}"
        for claimer, batch in enumerate(batches):
            for claim in batch:
                await claimers[claimer].outbox.finish(claim, Outcome(DeliveryStatus.succeeded), NOW)
        delivered += sum(len(batch) for batch in batches)
        if not any(batches):
            break
    assert delivered == 2 * PAIRS, "every row was claimed in the end"


@pytest.mark.parametrize("first", ["pending", "abandoned"])
async def test_one_claim_never_holds_two_rows_of_a_pair(claimers: list[Store], first: str) -> None:
    """A worker pushes its claims concurrently: two rows of one pair in one batch would race at the
    provider, and the older state could land last. The case that met it: a worker killed mid-push
    leaves a ``sending`` row whose lease runs out, beside a newer pending row of the same pair."""
    store = claimers[0]
    await two_open_rows_per_pair(store)
    if first == "abandoned":
        async with store.engine.begin() as conn:
            older = select(deliveries.c.id).order_by(deliveries.c.subject_id, deliveries.c.id)
            ids = [row[0] for row in (await conn.execute(older)).all()][::2]  # one row of each pair
            lapsed = {"status": DeliveryStatus.sending.value, "lease_until": NOW - timedelta(seconds=1)}
            await conn.execute(deliveries.update().where(deliveries.c.id.in_(ids)).values(lapsed))
    batch = await store.outbox.claim("fake", 4 * PAIRS, NOW, 60, ladder_steps=7)
    subjects = [claim.subject_id for claim in batch]
    assert len(subjects) == len(set(subjects)) == PAIRS


@pytest.mark.postgres
async def test_a_claim_does_not_wait_for_another_claimers_open_transaction(claimers: list[Store]) -> None:
    """A claimer stuck mid-transaction on one provider (or one pair) holds up nobody else."""
    if claimers[0].engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: claims are serial by design")
    await two_open_rows_per_pair(claimers[0])
    async with claimers[0].engine.begin() as conn:  # another worker, its claim not yet committed
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/fake'), hashtext('s-0'))"))
        await conn.execute(
            select(deliveries.c.id).where(deliveries.c.subject_id == "s-1").with_for_update()
        )  # and a row lock, as its candidate select takes
        claimed = await asyncio.wait_for(claimers[1].outbox.claim("fake", 500, NOW, 60, ladder_steps=7), 5)
    pairs = {claim.subject_id for claim in claimed}
    assert "s-0" not in pairs and "s-1" not in pairs, "held pairs are skipped, not waited for"
    assert len(pairs) == PAIRS - 2


async def test_a_pair_claimed_since_the_candidate_select_is_not_claimed_again(store: Store) -> None:
    """The in-flight check is made again when the rows are leased, in a fresh statement."""
    await two_open_rows_per_pair(store)
    async with store.engine.begin() as conn:
        first = (await conn.execute(select(deliveries.c.id).where(deliveries.c.subject_id == "s-0"))).scalars()
        await conn.execute(
            deliveries.update()
            .where(deliveries.c.id == next(iter(first)))
            .values(status=DeliveryStatus.sending.value, lease_until=NOW + timedelta(seconds=60))
        )
    claimed = await store.outbox.claim("fake", 500, NOW, 60, ladder_steps=7)
    assert "s-0" not in {claim.subject_id for claim in claimed}

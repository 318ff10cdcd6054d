"""Wix first syncs in bulk, end to end: the worker against the Wix simulator (in-process), each delivery
ending on its own, the provider's request count, known consents by PATCH, retries, and provenance."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from adapters.simulators.wix import BULK_UPSERT
from gateway.store import Store
from schemas.api import DeliveryStatus, SyncStatus
from tests.world import World

WIX_BASE = "/wix/marketing-consent/v1/marketing-consent"
BULK = f"/wix{BULK_UPSERT}"
SUBJECTS = 100
BULK_ON = {"wix": {"bulk_size": 100}}  # the default, said out loud


async def closed(world: World) -> None:
    await world.gateway.worker.stop()
    await world.control.aclose()


@pytest.fixture
async def wix_world(store: Store) -> AsyncIterator[World]:
    world = World(store, providers=BULK_ON)
    yield world
    await closed(world)


async def wix_calls(world: World, since: int = 0) -> list[tuple[str, str, int]]:
    requests = (await world.inspect("wix"))["requests"][since:]
    return [(entry["method"], entry["path"], entry["status"]) for entry in requests]


async def wix_deliveries(world: World) -> dict[str, Any]:
    """The Wix delivery of each subject, by subject id."""
    page = await world.gateway.store.outbox.list(provider="wix", limit=1000)
    return {delivery.subject_id: delivery for delivery in page.items}


async def decide_all(world: World, count: int = SUBJECTS, **purposes: str) -> None:
    for index in range(count):
        await world.decide(f"s-{index:03d}", 10, **purposes)


async def test_one_bulk_request_with_a_refused_item_ends_99_succeeded_and_that_one_dead(wix_world: World) -> None:
    world = wix_world
    await world.faults("wix", refused_addresses=["s-042@example.com"])
    await decide_all(world, email_marketing="granted")
    await world.gateway.worker.drain()
    assert await wix_calls(world) == [("POST", BULK, 200)], "a hundred first syncs: one request, no lookup"
    deliveries = await wix_deliveries(world)
    assert Counter(d.status for d in deliveries.values()) == {DeliveryStatus.succeeded: 99, DeliveryStatus.dead: 1}
    dead = deliveries["s-042"]
    assert dead.status is DeliveryStatus.dead
    assert dead.last_error is not None and "is refused for this site (simulated fault)" in dead.last_error
    assert "marketingConsent.details.email" in dead.last_error
    recorded = await world.gateway.store.outbox.get(dead.id)
    assert recorded is not None and recorded.attempt_log is not None and len(recorded.attempt_log) == 1
    assert recorded.attempt_log[0].status_code == 200, "the bulk request's own attempt, on each item's delivery"

    await world.faults("wix", refused_addresses=[])
    assert await world.gateway.store.outbox.replay(world.now, delivery_id=dead.id) == 1
    before = len(await wix_calls(world))
    await world.gateway.worker.drain()
    assert [call[:2] for call in await wix_calls(world, before)] == [
        ("GET", f"{WIX_BASE}/get-by"),
        ("POST", f"{WIX_BASE}/upsert"),
    ], "a lone replayed first sync goes the single way"
    assert (await wix_deliveries(world))["s-042"].status is DeliveryStatus.succeeded


@pytest.mark.parametrize("bulk_size", [100, 30])
async def test_first_syncs_cost_a_request_per_bulk_size_items_not_several_per_subject(
    store: Store, bulk_size: int
) -> None:
    world = World(store, providers={"wix": {"bulk_size": bulk_size}})
    try:
        await decide_all(world, email_marketing="granted", sms_marketing="granted")
        await world.gateway.worker.drain()
        calls = await wix_calls(world)
        consents = (await world.inspect("wix"))["state"]["consents"]
        deliveries = await wix_deliveries(world)
    finally:
        await closed(world)
    assert {call[:2] for call in calls} == {("POST", BULK)}
    assert len(calls) == math.ceil(2 * SUBJECTS / bulk_size), "two channels a subject, bulk_size items a request"
    assert len(consents) == 2 * SUBJECTS
    assert {d.status for d in deliveries.values()} == {DeliveryStatus.succeeded}


async def test_a_consent_known_at_wix_is_patched_at_its_revision_never_upserted_in_bulk(wix_world: World) -> None:
    world = wix_world
    await decide_all(world, 3, email_marketing="granted")
    await world.gateway.worker.drain()
    before = len(await wix_calls(world))
    world.now += timedelta(minutes=1)
    for index in range(3):
        await world.decide(f"s-{index:03d}", 20, email_marketing="denied")
    await world.gateway.worker.drain()
    patches = (await world.inspect("wix"))["requests"][before:]
    assert [(entry["method"], entry["status"]) for entry in patches] == [("PATCH", 200)] * 3
    assert {entry["body"]["marketingConsent"]["revision"] for entry in patches} == {"1"}
    states = {c["details"]["email"]: c["state"] for c in (await world.inspect("wix"))["state"]["consents"].values()}
    assert set(states.values()) == {"REVOKED"}


class FailFirstBulk(httpx.AsyncBaseTransport):
    """In front of the simulators: the first ``failures`` bulk requests answer 503 without reaching Wix."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(BULK_UPSERT) and self.failures:
            self.failures -= 1
            return httpx.Response(503)
        return await self.inner.handle_async_request(request)


async def test_a_transient_bulk_failure_is_retried_in_process_then_succeeds(store: Store) -> None:
    world = World(
        store, providers=BULK_ON, wrap_transport=lambda name, inner: FailFirstBulk(inner, 1) if name == "wix" else inner
    )
    try:
        await decide_all(world, 5, email_marketing="granted")
        await world.gateway.worker.drain()
        calls = await wix_calls(world)
        deliveries = await wix_deliveries(world)
        logs = [await world.gateway.store.outbox.get(d.id) for d in deliveries.values()]
    finally:
        await closed(world)
    assert calls == [("POST", BULK, 200)]
    assert {d.status for d in deliveries.values()} == {DeliveryStatus.succeeded}
    for log in logs:
        assert log is not None and log.attempt_log is not None
        assert [(a.outcome, a.status_code) for a in log.attempt_log] == [("transient", 503), ("succeeded", 200)]


async def test_a_bulk_failing_past_its_retries_is_rescheduled_and_retried_alone(store: Store) -> None:
    world = World(store, providers=BULK_ON, retry={"attempts": 2, "ladder_s": [60]})
    try:
        await world.faults("wix", error_rate=1, status=503, path="bulk")
        await decide_all(world, 2, email_marketing="granted")
        await world.gateway.worker.drain()
        assert {d.status for d in (await wix_deliveries(world)).values()} == {DeliveryStatus.retrying}
        await world.faults("wix", error_rate=0)
        before = len(await wix_calls(world))
        world.now += timedelta(minutes=5)
        await world.gateway.worker.drain()
        retried = [call[:2] for call in await wix_calls(world, before)]
        deliveries = await wix_deliveries(world)
    finally:
        await closed(world)
    single = {("GET", f"{WIX_BASE}/get-by"): 2, ("POST", f"{WIX_BASE}/upsert"): 2}
    assert Counter(retried) == single, "each retried alone, the single way: no bulk"
    assert {d.status for d in deliveries.values()} == {DeliveryStatus.succeeded}


async def test_a_read_back_after_a_bulk_sync_knows_the_gateways_own_writes(wix_world: World) -> None:
    world = wix_world
    await decide_all(world, 3, email_marketing="granted", sms_marketing="denied")
    await world.gateway.worker.drain()
    assert {call[:2] for call in await wix_calls(world)} == {("POST", BULK)}
    finished = await world.readback("wix")
    assert finished.counts["wix"]["read"] == 3
    assert finished.counts["wix"]["adopted"] == 0 and finished.counts["wix"]["diverged"] == 0
    rows = await world.gateway.reconciler.rows([f"s-{index:03d}" for index in range(3)])
    assert {row.status for row in rows if row.provider == "wix"} == {SyncStatus.in_sync}
    for index in range(3):
        held = await world.gateway.store.outbox.acknowledged(f"s-{index:03d}", "wix")
        assert set(held.memo) == {"EMAIL", "PHONE"}, "the consent ids learnt from the bulk answer"
        assert held.writes.to_json(), "the bulk request's writes, journaled in each subject's own delivery"

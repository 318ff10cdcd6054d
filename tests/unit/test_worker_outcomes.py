"""How deliveries end and are reported: failures outside the provider call climb the retry ladder
and end dead; dead letters are logged loud enough to alert on; an answer a flow expects is a success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from adapters.base import Projection
from gateway.config import Settings
from gateway.service import Gateway
from gateway.store import Store
from gateway.store.outbox import ABANDONED
from schemas.api import DeliveryOut, DeliveryStatus
from schemas.consent import SubjectState
from tests.fakes import FakeAdapter, FakeSettings
from tests.unit.test_worker import NOW, Provider, post, reply
from tests.world import Sleeps, World


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


class BrokenProjection(FakeAdapter):
    """An adapter whose ``project`` has a bug that shows only once the worker projects the state."""

    broken = False

    def project(self, state: SubjectState) -> Projection:
        if self.broken:
            raise RuntimeError("adapter bug")
        return super().project(state)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_gateway(store: Store, clock: Clock, provider: Provider, adapter: FakeAdapter | None = None) -> Gateway:
    return Gateway(
        Settings(retry={"attempts": 1, "ladder_s": [60, 600]}, worker={"lease_s": 60}),
        store=store,
        adapters={"fake": adapter or FakeAdapter(FakeSettings())},
        transports={"fake": httpx.MockTransport(provider)},
        clock=clock,
        sleep=Sleeps(),
    )


@pytest.fixture
async def gateway(store: Store, clock: Clock) -> AsyncIterator[Gateway]:
    gateway = make_gateway(store, clock, Provider(), BrokenProjection(FakeSettings()))
    yield gateway
    await gateway.worker.stop()


async def only_delivery(gateway: Gateway) -> DeliveryOut:
    page = await gateway.store.outbox.list(provider="fake")
    [found] = page.items
    return found


def dead_letters(gateway: Gateway) -> float:
    return gateway.metrics.registry.get_sample_value("consent_gateway_dead_letters_total", {"provider": "fake"}) or 0


async def test_an_adapter_bug_climbs_the_ladder_and_ends_dead(gateway: Gateway, clock: Clock) -> None:
    await post(gateway)
    gateway.adapters["fake"].broken = True  # type: ignore[attr-defined]
    seen = []
    with capture_logs() as logs:
        for step in (0, 120, 1200):
            clock.now = NOW + timedelta(seconds=step)
            await gateway.worker.drain()
            seen.append((await only_delivery(gateway)).status)
    assert seen == [DeliveryStatus.retrying, DeliveryStatus.retrying, DeliveryStatus.dead]
    dead = await only_delivery(gateway)
    assert dead.last_error == "gave up after 2 retries: fake: internal error: RuntimeError (see the worker log)"
    assert [entry["log_level"] for entry in logs if entry["event"] == "delivery_crashed"] == ["error"] * 3
    [gave_up] = [entry for entry in logs if entry["event"] == "delivery_dead"]
    assert gave_up["log_level"] == "error" and gave_up["gave_up"] is True and gave_up["delivery"] == dead.id


async def test_an_outcome_the_store_cannot_record_ends_dead_instead_of_coming_back_forever(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = make_gateway(store, clock, Provider())

    async def cannot_record(*_args: Any) -> None:
        raise RuntimeError("store refused the write")

    monkeypatch.setattr(gateway.store.outbox, "finish_many", cannot_record)
    await post(gateway)
    statuses = []
    with capture_logs() as logs:
        for lease in range(4):  # each lost outcome is found when the 60 s lease runs out
            clock.now = NOW + timedelta(seconds=61 * lease)
            await gateway.worker.drain()
            statuses.append((await only_delivery(gateway)).status)
    assert statuses == [DeliveryStatus.sending] * 3 + [DeliveryStatus.dead]
    assert (await only_delivery(gateway)).last_error == ABANDONED
    assert dead_letters(gateway) == 1
    assert [entry["log_level"] for entry in logs if entry["event"] == "delivery_dead"] == ["error"]
    await gateway.worker.stop()


async def test_a_dead_letter_is_a_warning_naming_provider_delivery_and_the_providers_error(
    store: Store, clock: Clock
) -> None:
    provider = Provider()
    provider.script = [reply(400, {"error": "bad consent"})]
    gateway = make_gateway(store, clock, provider)
    await post(gateway)
    with capture_logs() as logs:
        await gateway.worker.drain()
    [dead] = [entry for entry in logs if entry["event"] == "delivery_dead"]
    delivery = await only_delivery(gateway)
    assert dead["log_level"] == "warning" and dead["gave_up"] is False
    assert (dead["provider"], dead["delivery"]) == ("fake", delivery.id)
    assert "bad consent" in dead["error"] and dead_letters(gateway) == 1
    await gateway.worker.stop()


async def test_a_successful_attempt_keeps_its_status_code(store: Store, clock: Clock) -> None:
    provider = Provider()
    provider.script = [reply(201)]
    gateway = make_gateway(store, clock, provider)
    await post(gateway)
    await gateway.worker.drain()
    found = await gateway.store.outbox.get((await only_delivery(gateway)).id)
    assert found is not None and found.attempt_log is not None
    assert [(a.outcome, a.status_code) for a in found.attempt_log] == [("succeeded", 201)]
    await gateway.worker.stop()


async def test_wixs_expected_404_on_a_first_lookup_is_a_successful_attempt(world: World) -> None:
    decision_id = await world.decide("cust-1", 0, email_marketing="granted")
    await world.gateway.worker.drain()
    recorded = await world.gateway.store.ledger.decision(decision_id)
    assert recorded is not None
    [wix] = [d for d in recorded.deliveries if d.provider == "wix"]
    found = await world.gateway.store.outbox.get(wix.id)
    assert found is not None and found.status is DeliveryStatus.succeeded and found.attempt_log is not None
    assert [(a.outcome, a.status_code) for a in found.attempt_log] == [("succeeded", 404), ("succeeded", 200)]
    registry = world.gateway.metrics.registry
    assert registry.get_sample_value("consent_gateway_attempts_total", {"provider": "wix", "outcome": "permanent"}) in (
        None,
        0,
    )


async def test_the_worker_says_when_it_starts_and_stops(store: Store, clock: Clock) -> None:
    """An operator can tell a worker is up before it has delivered anything (one with no HTTP port
    serves no /readyz)."""
    gateway = make_gateway(store, clock, Provider())
    with capture_logs() as logs:
        gateway.worker.start()
        await gateway.worker.stop()
    said = [(entry["event"], entry["log_level"]) for entry in logs if entry["event"].startswith("worker_")]
    assert said == [("worker_started", "info"), ("worker_stopped", "info")]
    [started] = [entry for entry in logs if entry["event"] == "worker_started"]
    assert started["concurrency"] == {"fake": 4} and started["worker"] == gateway.worker.identity

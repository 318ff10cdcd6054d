"""The real worker and adapters against fault-injected simulators: 503s, 429s and timeouts
are retried until every provider holds the newest state."""

from __future__ import annotations

from datetime import timedelta

from gateway.store import Store
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from schemas.masivo import DOCUMENTED_PATTERN
from tests.world import CMP_STRING_2024, NOW, PROVIDERS, World, phone_of


async def test_intermittent_503s_are_retried_until_all_providers_hold_the_newest_state(world: World) -> None:
    for provider in PROVIDERS:
        await world.faults(provider, error_rate=0.4, status=503, seed=11)
    subjects = [f"cust-{i}" for i in range(8)]
    for subject in subjects:
        await world.decide(subject, 0, email_marketing="granted", sms_marketing="granted")
        await world.decide(subject, 10, email_marketing="denied")
    for _ in range(4):  # in-process retries, then durable re-schedules as the clock moves on
        await world.gateway.worker.drain()
        world.now += timedelta(hours=1)

    masivo = (await world.inspect("masivo"))["state"]["consents"]
    wix = {
        consent["details"].get("email") or consent["details"]["phone"]: consent["state"]
        for consent in (await world.inspect("wix"))["state"]["consents"].values()
    }
    intempt = (await world.inspect("intempt"))["state"]["consents"]["acme"]["web"]
    for subject in subjects:
        assert masivo[subject]["purposes"]["email_marketing"] is False
        assert intempt[subject]["email"]["action"] == "reject" and intempt[subject]["sms"]["action"] == "accept"
        assert wix[f"{subject}@example.com"] == "REVOKED", "the subject's own EMAIL consent"
    assert {wix[phone_of(subject)] for subject in subjects} == {"CONFIRMED"}, "each subject's own PHONE consent"
    assert any(call > 0 for call in world.sleeps.calls)


async def test_a_429_is_honoured_and_delivery_completes_when_it_clears(world: World) -> None:
    await world.faults("intempt", error_rate=1, status=429, retry_after_s=3)
    decision_id = await world.decide("cust-1", 0, analytics="granted")
    await world.gateway.worker.drain()
    assert (await world.statuses(decision_id))["intempt"] is DeliveryStatus.retrying
    assert world.sleeps.calls[:3] == [3.0, 3.0, 3.0]

    await world.faults("intempt", error_rate=0)
    world.now += timedelta(hours=1)
    await world.gateway.worker.drain()
    assert (await world.statuses(decision_id))["intempt"] is DeliveryStatus.succeeded


async def test_a_provider_that_hangs_times_out_and_does_not_hold_up_the_others(world: World) -> None:
    await world.faults("wix", timeout_rate=1, hang_s=5)
    decision_id = await world.decide("cust-1", 0, email_marketing="granted")
    await world.gateway.worker.drain()
    statuses = await world.statuses(decision_id)
    assert statuses == {"masivo": "succeeded", "wix": "retrying", "intempt": "succeeded"}
    found = await world.gateway.store.ledger.decision(decision_id)
    assert found is not None
    wix = next(d for d in found.deliveries if d.provider == "wix")
    assert wix.last_error == "wix: no answer within 0.2 s" and wix.attempts == 4

    await world.faults("wix", timeout_rate=0)
    world.now += timedelta(hours=1)
    await world.gateway.worker.drain()
    assert (await world.statuses(decision_id))["wix"] is DeliveryStatus.succeeded


async def test_a_rule_masivo_documents_fails_the_delivery_at_once_without_a_request(store: Store) -> None:
    """An operator whose Masivo enforces its documented ^CO pattern sets it: a string created in
    2024 then fails locally, saying why, and Masivo never sees it."""
    world = World(store, providers={"masivo": {"consent_string_pattern": DOCUMENTED_PATTERN}})
    decision = Decision.model_validate(
        {
            "subject": {"id": "cust-9"},
            "purposes": {"email_marketing": "granted"},
            "tcf_string": CMP_STRING_2024,
            "occurred_at": NOW,
        },
        strict=False,
    )
    recorded = await world.gateway.record(decision)
    await world.gateway.worker.drain()
    found = await world.gateway.store.ledger.decision(recorded.id)
    assert found is not None
    masivo = next(d for d in found.deliveries if d.provider == "masivo")
    assert masivo.status is DeliveryStatus.dead and masivo.attempts == 0, "attempts count requests: none was made"
    assert masivo.last_error is not None and "^CO" in masivo.last_error
    assert not [r for r in (await world.inspect("masivo"))["requests"] if r["method"] == "PATCH"]
    await world.control.aclose()

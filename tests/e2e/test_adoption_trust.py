"""Reconciliation never loses an opt-out: a read-back adopts only real, datable, owned provider changes.

Each case was a way the default ``newest_wins`` policy took something that is not a person's newer
decision and recorded it as one (issue 15): a provider time in the future, the gateway's own write
read back, another customer's consent on a shared address, and a changed address left consenting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from gateway.config import ApiToken
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.reconcile.runner import NotAdoptable
from gateway.store import Store
from gateway.store.outbox import Outcome
from schemas.api import DeliveryStatus, SyncStatus
from schemas.consent import PurposeState
from tests.world import NOW, World

WIX_BASE = "/wix/marketing-consent/v1/marketing-consent"
FOREIGN = {"Authorization": "someone-elses-key", "wix-site-id": "site"}  # a change made at Wix, not by us


def world_with(store: Store, policy: str) -> World:
    return World(store, providers={name: {"drift_policy": policy} for name in ("masivo", "wix", "intempt")})


async def with_policy(store: Store, policy: str) -> AsyncIterator[World]:
    world = world_with(store, policy)
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()


@pytest.fixture
async def newest_wins(store: Store) -> AsyncIterator[World]:
    async for world in with_policy(store, "newest_wins"):
        yield world


@pytest.fixture
async def report_only(store: Store) -> AsyncIterator[World]:
    async for world in with_policy(store, "report_only"):
        yield world


async def at_wix(world: World, address: str, state: str, when: str) -> None:
    """Someone sets a consent at Wix behind the gateway's back (upsert: creates it or changes it)."""
    activity = "lastRevokeActivity" if state == "REVOKED" else "lastConfirmationActivity"
    details = {"type": "EMAIL", "email": address}
    moment: dict[str, Any] = {"source": "OTHER", "updatedDate": when}
    if state != "REVOKED":
        moment["optInLevel"] = "SINGLE_CONFIRMATION"
    body = {"marketingConsent": {"details": details, "state": state, activity: moment}}
    response = await world.control.post(f"{WIX_BASE}/upsert", json=body, headers=FOREIGN)
    assert response.status_code == 200, response.text


async def wix_states(world: World) -> dict[str, str]:
    consents = (await world.inspect("wix"))["state"]["consents"].values()
    return {c["details"].get("email") or c["details"]["phone"]: c["state"] for c in consents}


async def masivo_purposes(world: World, subject: str) -> dict[str, bool]:
    purposes: dict[str, bool] = (await world.inspect("masivo"))["state"]["effective_purposes"][subject]
    return purposes


async def intempt_actions(world: World, subject: str) -> dict[str, str]:
    held = (await world.inspect("intempt"))["state"]["consents"]["acme"]["web"][subject]
    return {category: value["action"] for category, value in held.items()}


async def purpose(world: World, subject: str, name: str) -> PurposeState:
    state = await world.gateway.store.ledger.subject_state(subject)
    assert state is not None
    return state.purposes[name].state


async def sources(world: World, subject: str) -> list[str]:
    return [entry.decision.source for entry in await world.gateway.store.ledger.history(subject, 50)]


async def row(world: World, subject: str, provider: str) -> Any:
    [found] = await world.gateway.reconciler.rows([subject], provider)
    return found


async def until_dead(world: World, decision_id: str, provider: str) -> None:
    """Drain, passing every step of World's retry ladder, until ``provider``'s delivery is dead."""
    for _ in range(6):
        await world.gateway.worker.drain()
        if (await world.statuses(decision_id))[provider] is DeliveryStatus.dead:
            return
        world.now += timedelta(hours=2)
    raise AssertionError(f"{provider}'s delivery never died: {await world.statuses(decision_id)}")


# -- 1. a provider time in the future -------------------------------------------------------------------


async def test_a_provider_time_in_the_future_is_not_adopted_and_a_later_opt_out_still_wins(newest_wins: World) -> None:
    world = newest_wins
    await world.decide("cust-1", 10, email_marketing="denied", push_notifications="granted")
    await world.gateway.worker.drain()
    await at_wix(world, "cust-1@example.com", "CONFIRMED", "2031-01-01T00:00:00Z")

    finished = await world.readback("wix")
    assert finished.counts["wix"]["adopted"] == 0 and finished.counts["wix"]["repushed"] == 1
    assert "provider:wix" not in await sources(world, "cust-1")
    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await wix_states(world))["cust-1@example.com"] == "REVOKED", "pushed again, as an undated difference"
    assert (await masivo_purposes(world, "cust-1"))["email_marketing"] is False
    assert (await intempt_actions(world, "cust-1"))["email"] == "reject"

    world.now += timedelta(minutes=1)
    again = await world.decide("cust-1", 61, email_marketing="denied")  # an opt-out sent through the API later
    found = await world.gateway.store.ledger.decision(again)
    assert found is not None and found.effective_purposes == ["email_marketing"] and not found.superseded_purposes


async def test_the_row_says_why_a_future_provider_time_is_not_adopted(report_only: World) -> None:
    world = report_only
    await world.decide("cust-1", 10, email_marketing="denied")
    await world.gateway.worker.drain()
    await at_wix(world, "cust-1@example.com", "CONFIRMED", "2031-01-01T00:00:00Z")
    await world.readback("wix")
    wix = await row(world, "cust-1", "wix")
    assert wix.status is SyncStatus.diverged
    assert "provider time in the future" in wix.not_adopted["EMAIL"]


async def test_a_provider_time_within_the_allowed_skew_is_adopted(newest_wins: World) -> None:
    world = newest_wins
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    soon = world.now + timedelta(seconds=world.gateway.settings.max_clock_skew_s - 30)
    await at_wix(world, "cust-1@example.com", "REVOKED", soon.isoformat())
    finished = await world.readback("wix")
    assert finished.counts["wix"]["adopted"] == 1
    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied


# -- 2. the gateway's own write read back -----------------------------------------------------------------


async def test_masivo_holding_the_gateways_own_write_is_not_a_change_there(newest_wins: World) -> None:
    """Masivo keeps one consent_timestamp per record: T3 is the gateway's own write (the push after the
    push_notifications decision), not a person's change of email_marketing at T3."""
    world = newest_wins
    await world.decide("cust-1", 10, email_marketing="granted")  # T1
    await world.gateway.worker.drain()
    await world.decide("cust-1", 30, push_notifications="granted")  # T3: Masivo now holds timestamp T3
    await world.gateway.worker.drain()
    await world.faults("masivo", error_rate=1, status=503)
    late = await world.decide("cust-1", 20, email_marketing="denied")  # T2, arriving late
    await until_dead(world, late, "masivo")
    assert (await world.statuses(late))["wix"] is DeliveryStatus.succeeded
    await world.faults("masivo", error_rate=0)

    finished = await world.readback()
    assert finished.counts["masivo"]["adopted"] == 0 and finished.counts["masivo"]["repushed"] == 1
    metric = world.gateway.metrics.registry.get_sample_value
    assert metric("consent_gateway_runs_total", {"status": "done"}) == 1
    assert metric("consent_gateway_run_rows_total", {"provider": "masivo", "outcome": "repushed"}) == 1
    assert metric("consent_gateway_run_rows_total", {"provider": "wix", "outcome": "read"}) == 1
    assert "provider:masivo" not in await sources(world, "cust-1")
    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await masivo_purposes(world, "cust-1"))["email_marketing"] is False
    assert (await wix_states(world))["cust-1@example.com"] == "REVOKED"
    assert (await intempt_actions(world, "cust-1"))["email"] == "reject"


async def test_a_real_change_at_masivo_is_still_adopted(newest_wins: World) -> None:
    world = newest_wins
    await world.decide("cust-1", 10, email_marketing="granted", push_notifications="granted")
    await world.gateway.worker.drain()
    held = (await world.inspect("masivo"))["state"]["consents"]["cust-1"]
    changed = held | {
        "purposes": held["purposes"] | {"email_marketing": False},
        "consent_timestamp": (NOW + timedelta(minutes=1)).isoformat(),
    }
    await world.control.patch(
        "/masivo/customers/cust-1/consent", json={"consent": changed}, headers=await masivo_auth(world)
    )
    finished = await world.readback("masivo")
    assert finished.counts["masivo"]["adopted"] == 1
    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert await purpose(world, "cust-1", "push_notifications") is PurposeState.granted, "unchanged there: not adopted"
    assert (await wix_states(world))["cust-1@example.com"] == "REVOKED"


async def masivo_auth(world: World) -> dict[str, str]:
    token = (await world.control.get("/masivo/auth/authorize", headers={"x-api-key": "someone"})).json()["data"]
    return {"Authorization": f"Bearer {token}"}


# -- 3. one address, two people ---------------------------------------------------------------------------


async def test_another_subjects_consent_on_a_shared_address_is_never_adopted(newest_wins: World) -> None:
    world = newest_wins
    shared = "family@example.com"
    await world.decide("cust-a", 10, email=shared, email_marketing="denied")
    await world.gateway.worker.drain()
    await world.decide("cust-b", 20, email=shared, email_marketing="granted")
    await world.gateway.worker.drain()

    finished = await world.readback()
    assert finished.counts["wix"]["adopted"] == 0
    assert await purpose(world, "cust-a", "email_marketing") is PurposeState.denied
    assert await purpose(world, "cust-b", "email_marketing") is PurposeState.granted
    assert (await masivo_purposes(world, "cust-a"))["email_marketing"] is False
    assert (await intempt_actions(world, "cust-a"))["email"] == "reject"
    assert (await wix_states(world))[shared] == "REVOKED", "a denial by anyone holding the address wins there"
    assert (await row(world, "cust-a", "wix")).shared_with == ["cust-b"]
    assert (await row(world, "cust-b", "wix")).shared_with == ["cust-a"]
    assert (await row(world, "cust-a", "masivo")).shared_with == [], "Masivo keys consents by customer id"


async def test_a_revoke_on_a_shared_address_is_kept_there_and_reported_not_adopted(newest_wins: World) -> None:
    world = newest_wins
    shared = "family@example.com"
    await world.decide("cust-a", 10, email=shared, email_marketing="granted")
    await world.decide("cust-b", 20, email=shared, email_marketing="granted")
    await world.gateway.worker.drain()
    await at_wix(world, shared, "REVOKED", (NOW + timedelta(minutes=1)).isoformat())

    finished = await world.readback("wix")
    assert finished.counts["wix"]["adopted"] == 0 and finished.counts["wix"]["repushed"] == 0
    assert (await wix_states(world))[shared] == "REVOKED", "an opt-out there is never pushed over"
    for subject in ("cust-a", "cust-b"):
        assert await purpose(world, subject, "email_marketing") is PurposeState.granted
        wix = await row(world, subject, "wix")
        assert wix.status is SyncStatus.diverged and "shared address" in wix.not_adopted["EMAIL"]


async def test_a_subject_leaving_a_shared_address_hands_it_back_to_the_other(newest_wins: World) -> None:
    world = newest_wins
    shared = "family@example.com"
    await world.decide("cust-a", 10, email=shared, email_marketing="granted")
    await world.decide("cust-b", 20, email=shared, email_marketing="denied")
    await world.gateway.worker.drain()
    assert (await wix_states(world))[shared] == "REVOKED"
    await world.decide("cust-b", 30, email="b-alone@example.com", email_marketing="denied")
    await world.gateway.worker.drain()
    held = await wix_states(world)
    assert held[shared] == "CONFIRMED", "cust-a alone holds it again: its own opt-in"
    assert held["b-alone@example.com"] == "REVOKED"
    assert (await row(world, "cust-a", "wix")).status is SyncStatus.in_sync


async def test_a_consent_an_address_held_before_the_subject_had_it_is_never_adopted(newest_wins: World) -> None:
    """Someone opted in on an address at Wix ten minutes before a subject arrived with it: not the subject's."""
    world = newest_wins
    await at_wix(world, "second-hand@example.com", "CONFIRMED", (NOW - timedelta(minutes=10)).isoformat())
    await world.decide("cust-1", 10, email="second-hand@example.com", email_marketing="denied")  # at NOW - 50 min
    await world.decide("cust-1", 11, email="second-hand@example.com", push_notifications="granted")
    world.now += timedelta(seconds=10)
    [claimed] = await world.gateway.store.outbox.claim("wix", 1, world.now, 60, ladder_steps=3)
    await world.gateway.store.outbox.finish(claimed, Outcome(DeliveryStatus.dead, error="simulated"), world.now)
    await world.gateway.worker.drain()
    finished = await world.readback("wix")
    assert finished.counts["wix"]["adopted"] == 0
    assert await purpose(world, "cust-1", "email_marketing") is PurposeState.denied
    assert (await wix_states(world))["second-hand@example.com"] == "REVOKED"


async def test_an_address_many_subjects_share_costs_one_push_whatever_their_number(newest_wins: World) -> None:
    """A placeholder phone thirty people typed in: one consent at Wix, the most protective of them all."""
    world = newest_wins
    placeholder = "+15550000000"
    for index in range(30):
        state = "denied" if index == 7 else "granted"
        await world.decide(f"p-{index:02d}", 10 + index, phone=placeholder, sms_marketing=state)
    await world.gateway.worker.drain()
    phones = {c["details"].get("phone"): c["state"] for c in (await world.inspect("wix"))["state"]["consents"].values()}
    assert phones[placeholder] == "REVOKED", "p-07's opt-out wins there"
    wix = await row(world, "p-00", "wix")
    assert len(wix.shared_with) == 20 and wix.shared_with[0] == "p-01", "the first twenty others are named"

    before = (await world.gateway.store.outbox.list(limit=1000)).items
    leaving = await world.decide("p-07", 50, phone="+14155550107", sms_marketing="denied")
    found = await world.gateway.store.ledger.decision(leaving)
    assert found is not None and {d.subject_id for d in found.deliveries} == {"p-07"}
    queued = [d for d in (await world.gateway.store.outbox.list(limit=1000)).items if d not in before]
    assert sorted({d.subject_id for d in queued if d.provider == "wix"}) == ["p-00", "p-07"], "one other holder"
    await world.gateway.worker.drain()
    phones = {c["details"].get("phone"): c["state"] for c in (await world.inspect("wix"))["state"]["consents"].values()}
    assert phones[placeholder] == "CONFIRMED", "without p-07, everyone left there opted in"


# -- 4. a changed address ---------------------------------------------------------------------------------


async def test_a_changed_address_is_withdrawn_and_erasure_removes_every_address(newest_wins: World) -> None:
    world = newest_wins
    await world.decide("cust-1", 10, email="old@example.com", email_marketing="granted")
    await world.gateway.worker.drain()
    await world.decide("cust-1", 20, email="new@example.com", email_marketing="denied")
    await world.gateway.worker.drain()
    held = await wix_states(world)
    assert held["old@example.com"] == "REVOKED", "the old address's consent is withdrawn with the change"
    assert held["new@example.com"] == "REVOKED"

    world.now += timedelta(minutes=1)
    found = await world.gateway.erasures.request("cust-1", "test")
    assert found is not None
    await world.gateway.worker.drain()
    assert await world.gateway.erasures.step()
    held = await wix_states(world)
    assert "old@example.com" not in held and "new@example.com" not in held


async def test_an_old_address_another_subject_holds_is_left_to_it(newest_wins: World) -> None:
    world = newest_wins
    await world.decide("cust-1", 10, email="old@example.com", email_marketing="granted")
    await world.decide("cust-2", 15, email="old@example.com", email_marketing="granted")
    await world.gateway.worker.drain()
    await world.decide("cust-1", 20, email="new@example.com", email_marketing="denied")
    await world.gateway.worker.drain()
    assert (await wix_states(world))["old@example.com"] == "CONFIRMED", "cust-2's address, cust-2's opt-in"


# -- 5. related ------------------------------------------------------------------------------------------


async def test_a_push_in_flight_is_under_way_in_the_view_and_a_run_leaves_the_row_alone(newest_wins: World) -> None:
    world = newest_wins
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    await at_wix(world, "cust-1@example.com", "REVOKED", (NOW + timedelta(minutes=1)).isoformat())
    await world.decide("cust-1", 20, push_notifications="granted", sms_marketing="granted")
    [claim] = await world.gateway.store.outbox.claim("wix", 1, world.now, 60, ladder_steps=3)  # now 'sending'
    assert (await row(world, "cust-1", "wix")).status is SyncStatus.pending

    world.now += timedelta(seconds=1)
    queued = await world.gateway.reconciler.start(["wix"], None)
    claimed = await world.gateway.store.runs.claim(world.now, 60)
    assert claimed is not None and claimed.id == queued.id
    finished = await world.gateway.reconciler.execute(claimed, world.gateway.worker)
    assert finished.counts["wix"]["adopted"] == 0 and finished.counts["wix"]["repushed"] == 0
    assert claim.subject_id == "cust-1"


# -- an admin's adopt: the same rules, on every surface ----------------------------------------------------


async def shared_and_read(world: World) -> None:
    """cust-a and cust-b share an address; someone confirmed it at Wix since; a run read it (report only)."""
    await world.decide("cust-a", 10, email="family@example.com", email_marketing="denied")
    await world.decide("cust-b", 20, email="family@example.com", email_marketing="denied")
    await world.gateway.worker.drain()
    await at_wix(world, "family@example.com", "CONFIRMED", (NOW + timedelta(minutes=1)).isoformat())
    await world.readback("wix")


async def test_an_admin_cannot_adopt_a_consent_on_a_shared_address_api_and_cli(
    report_only: World, database_url: str, tmp_path: Path
) -> None:
    world = report_only
    await shared_and_read(world)
    before = await sources(world, "cust-a")
    world.gateway.settings.tokens.append(ApiToken(name="admin", sha256=hash_token("admin-token-0123456789")))
    app = create_app(world.gateway, run_worker=False)
    auth = {"Authorization": "Bearer admin-token-0123456789"}
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        refused = await api.post("/v1/subjects/cust-a/providers/wix/adopt", headers=auth)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/not-adoptable")
    assert "shared address (also held by cust-b)" in refused.json()["detail"]
    assert "family@example.com" not in refused.text

    config = tmp_path / "config.toml"
    config.write_text(
        f'database_url = "{database_url}"\n[providers.wix]\nbase_url = "https://sim/wix"\n'
        'api_key = "${WIX_KEY}"\nsite_id = "site"\n'
    )
    command = ["subjects", "adopt", "cust-a", "--provider", "wix", "--config", str(config)]
    cli = await asyncio.to_thread(CliRunner().invoke, cli_app, command, env={"WIX_KEY": "k" * 16})
    assert cli.exit_code == 1 and "shared address" in cli.output, cli.output
    assert await sources(world, "cust-a") == before, "nothing recorded"


async def test_an_admin_can_adopt_a_persons_older_change_dated_now(report_only: World) -> None:
    world = report_only
    await world.decide("cust-1", 10, email_marketing="granted")  # the subject holds its address since NOW
    world.now += timedelta(hours=2)
    await world.decide("cust-1", 150, email_marketing="granted")  # decided at NOW + 90 min
    await world.gateway.worker.drain()
    await at_wix(world, "cust-1@example.com", "REVOKED", (NOW + timedelta(hours=1)).isoformat())
    await world.readback("wix")
    assert "older than the gateway's decision" in (await row(world, "cust-1", "wix")).not_adopted["EMAIL"]
    adopted = await world.gateway.reconciler.adopt("cust-1", "wix")
    assert adopted is not None and adopted.decision.occurred_at == world.now
    assert adopted.decision.purposes == {"email_marketing": "denied"}
    assert await world.gateway.reconciler.adopt("cust-1", "wix") is None, "it holds what the gateway wants now"


async def test_an_admin_cannot_adopt_the_gateways_own_write(report_only: World) -> None:
    world = report_only
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.decide("cust-1", 30, push_notifications="granted")
    await world.gateway.worker.drain()
    await world.faults("masivo", error_rate=1, status=503)
    late = await world.decide("cust-1", 20, email_marketing="denied")
    await until_dead(world, late, "masivo")
    await world.faults("masivo", error_rate=0)
    await world.readback("masivo")
    with pytest.raises(NotAdoptable, match="email_marketing: the gateway's own write"):
        await world.gateway.reconciler.adopt("cust-1", "masivo")


# -- a decision whose consent already ended ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "why"),
    [
        ("2026-11-23T10:00:00Z", "must be later than occurred_at"),
        ("2026-11-23T11:30:00Z", "is already past"),
    ],
)
async def test_a_decision_expired_on_arrival_is_refused_naming_expires_at(
    report_only: World, expires_at: str, why: str
) -> None:
    world = report_only
    world.gateway.settings.tokens.append(ApiToken(name="writer", sha256=hash_token("writer-token-0123456789")))
    app = create_app(world.gateway, run_worker=False)
    body = {
        "subject": {"id": "cust-1"},
        "purposes": {"email_marketing": "granted"},
        "occurred_at": "2026-11-23T11:00:00Z",
        "expires_at": expires_at,
    }
    auth = {"Authorization": "Bearer writer-token-0123456789"}
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        refused = await api.post("/v1/consents", json=body, headers=auth)
        batch = await api.post("/v1/consents:batch", json={"decisions": [body]}, headers=auth)
    assert refused.status_code == 422
    [error] = refused.json()["errors"]
    assert error["field"] == "expires_at" and why in error["message"]
    assert batch.json()["results"][0]["problem"]["errors"][0]["field"] == "decisions.0.expires_at"
    assert await world.gateway.store.ledger.subject_state("cust-1") is None, "nothing recorded"

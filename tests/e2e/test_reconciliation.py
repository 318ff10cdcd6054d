"""Reconciliation against the simulators, with state changed behind the gateway's back: rows turn
diverged with the right difference, and each drift policy does what it says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from gateway.config import ApiToken
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.reconcile.runner import RunLoop
from gateway.store import Store
from gateway.store.tables import reconciliation_runs
from schemas.api import RunOut, RunStatus, SyncStatus
from tests.world import NOW, World

EMAIL = "cust-1@example.com"
WIX_BASE = "/wix/marketing-consent/v1/marketing-consent"


def world_with(store: Store, **policies: str) -> World:
    return World(store, providers={name: {"drift_policy": policy} for name, policy in policies.items()})


@pytest.fixture
async def report_only(store: Store) -> AsyncIterator[World]:
    world = world_with(store, masivo="report_only", wix="report_only", intempt="report_only")
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()


@pytest.fixture
async def newest_wins(store: Store) -> AsyncIterator[World]:
    world = world_with(store)
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()


@pytest.fixture
async def gateway_wins(store: Store) -> AsyncIterator[World]:
    world = world_with(store, masivo="gateway_wins", wix="gateway_wins", intempt="gateway_wins")
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()


async def synced(world: World, subject: str = "cust-1") -> None:
    """The subject opted in to email and SMS 50 minutes before NOW, delivered everywhere."""
    await world.decide(subject, 10, email_marketing="granted", sms_marketing="granted", push_notifications="granted")
    await world.gateway.worker.drain()


async def run(world: World, **options: Any) -> RunOut:
    """A read-back run a second after the last push, then the pushes it queued a second later."""
    reconciler = world.gateway.reconciler
    world.now += timedelta(seconds=1)
    queued = await reconciler.start(options.get("providers"), options.get("subjects"))
    claimed = await world.gateway.store.runs.claim(world.now, 60)
    assert claimed is not None and claimed.id == queued.id
    finished = await reconciler.execute(claimed, world.gateway.worker)
    world.now += timedelta(seconds=1)
    await world.gateway.worker.drain()
    return finished


async def revoke_at_wix(world: World, address: str, when: str) -> None:
    """A person unsubscribes through a Wix link: Wix revokes the consent, the gateway is not told."""
    body = {
        "details": {"type": "EMAIL", "email": address},
        "lastRevokeActivity": {"source": "REVOKE_LINK", "updatedDate": when},
    }
    headers = {"Authorization": "someone-elses-key", "wix-site-id": "site"}
    response = await world.control.post(f"{WIX_BASE}/remove", json=body, headers=headers)
    assert response.status_code == 200, response.text


async def rows(world: World, subject: str = "cust-1") -> dict[str, Any]:
    return {row.provider: row for row in await world.gateway.reconciler.rows([subject])}


async def wix_requests(world: World) -> list[dict[str, Any]]:
    return [r for r in (await world.inspect("wix"))["requests"] if r["path"].startswith(WIX_BASE)]


async def test_a_revoke_behind_the_gateways_back_turns_the_row_diverged(report_only: World) -> None:
    world = report_only
    await synced(world)
    before = await rows(world)
    assert {name: row.status for name, row in before.items()} == {
        "masivo": SyncStatus.in_sync,
        "wix": SyncStatus.in_sync,
        "intempt": SyncStatus.unobservable,
    }
    await revoke_at_wix(world, EMAIL, (NOW + timedelta(minutes=5)).isoformat())

    finished = await run(world)
    assert finished.status is RunStatus.done and finished.counts["wix"]["diverged"] == 1
    wix = (await rows(world))["wix"]
    assert wix.status is SyncStatus.diverged
    assert [(d.term, d.desired, d.held) for d in wix.difference] == [("EMAIL.state", "CONFIRMED", "REVOKED")]
    state = await world.gateway.store.ledger.subject_state("cust-1")
    assert state is not None and state.purposes["email_marketing"].state == "granted", "report_only changes nothing"


async def test_newest_wins_adopts_a_wix_revoke_and_fans_it_out_but_not_back(newest_wins: World) -> None:
    world = newest_wins
    await synced(world)
    revoked_at = NOW + timedelta(minutes=5)  # after the gateway's own decision
    await revoke_at_wix(world, EMAIL, revoked_at.isoformat())
    wix_before = len(await wix_requests(world))

    finished = await run(world)
    assert finished.counts["wix"]["adopted"] == 1 and finished.counts["wix"]["repushed"] == 0

    [adopted, *_] = await world.gateway.store.ledger.history("cust-1", 5)
    assert adopted.decision.source == "provider:wix"
    assert adopted.decision.purposes == {"email_marketing": "denied"}
    assert adopted.decision.occurred_at == revoked_at
    masivo = (await world.inspect("masivo"))["state"]["effective_purposes"]["cust-1"]
    intempt = (await world.inspect("intempt"))["state"]["consents"]["acme"]["web"]["cust-1"]
    assert masivo["email_marketing"] is False and masivo["push_notifications"] is True
    assert intempt["email"]["action"] == "reject" and intempt["sms"]["action"] == "accept"
    after = [r for r in await wix_requests(world)][wix_before:]
    assert [r["path"].rsplit("/", 1)[-1] for r in after] == ["query", "query"], "read back, never pushed back"
    assert {name: row.status for name, row in (await rows(world)).items()} == {
        "masivo": SyncStatus.in_sync,
        "wix": SyncStatus.in_sync,
        "intempt": SyncStatus.unobservable,
    }


async def test_an_older_provider_change_never_wins(newest_wins: World) -> None:
    world = newest_wins
    await synced(world)
    await revoke_at_wix(world, EMAIL, (NOW - timedelta(hours=2)).isoformat())  # before the gateway's decision

    finished = await run(world)
    assert finished.counts["wix"]["adopted"] == 0 and finished.counts["wix"]["repushed"] == 1
    state = await world.gateway.store.ledger.subject_state("cust-1")
    assert state is not None and state.purposes["email_marketing"].state == "granted"
    [repair, *_] = await world.gateway.store.ledger.history("cust-1", 5)
    assert repair.decision.source == "repair" and [d.provider for d in repair.deliveries] == ["wix"]
    consents = (await world.inspect("wix"))["state"]["consents"].values()
    assert [c["state"] for c in consents if c["details"].get("email") == EMAIL] == ["CONFIRMED"], "pushed again"


async def test_gateway_wins_pushes_its_state_again(gateway_wins: World) -> None:
    world = gateway_wins
    await synced(world)
    await revoke_at_wix(world, EMAIL, (NOW + timedelta(minutes=5)).isoformat())
    finished = await run(world)
    assert finished.counts["wix"] == {"read": 1, "unreadable": 0, "diverged": 1, "adopted": 0, "repushed": 1}
    consents = (await world.inspect("wix"))["state"]["consents"].values()
    assert [c["state"] for c in consents if c["details"].get("email") == EMAIL] == ["CONFIRMED"]
    assert (await rows(world))["wix"].status is SyncStatus.in_sync


async def test_masivos_all_true_default_is_nothing_recorded_and_gets_pushed_again(newest_wins: World) -> None:
    world = newest_wins
    await synced(world)
    await world.control.post("/masivo/_reset")  # Masivo lost the consent: it answers its all-true default
    finished = await run(world, providers=["masivo"])
    assert finished.counts["masivo"]["adopted"] == 0 and finished.counts["masivo"]["repushed"] == 1
    masivo = (await world.inspect("masivo"))["state"]["effective_purposes"]["cust-1"]
    assert masivo["email_marketing"] is True and masivo["coupon_campaigns"] is False, "the full state again"


async def test_an_intempt_row_is_never_in_sync_and_a_forced_repush_restores_it(newest_wins: World) -> None:
    world = newest_wins
    await synced(world)
    await world.control.post("/intempt/_reset")  # Intempt lost its state: nothing can tell
    await run(world)
    assert (await rows(world))["intempt"].status is SyncStatus.unobservable
    entry = await world.gateway.reconciler.repush("cust-1", ["intempt"], "intempt lost its state")
    assert entry is not None and entry.decision.source == "repair"
    await world.gateway.worker.drain()
    intempt = (await world.inspect("intempt"))["state"]["consents"]["acme"]["web"]["cust-1"]
    assert {category: value["action"] for category, value in intempt.items()} == {
        "email": "accept",
        "sms": "accept",
        "push": "accept",
    }


async def test_a_provider_failing_mid_run_fails_its_rows_only(newest_wins: World) -> None:
    world = newest_wins
    for index in range(3):
        await synced(world, f"cust-{index}")
    await world.faults("masivo", error_rate=1, status=503)
    finished = await run(world)
    assert finished.status is RunStatus.done
    assert finished.counts["masivo"]["unreadable"] == 3 and finished.counts["wix"]["read"] == 3
    masivo = (await rows(world, "cust-2"))["masivo"]
    assert masivo.observe_error is not None and "read failed" in masivo.observe_error and "503" in masivo.observe_error
    assert masivo.status is SyncStatus.in_sync, "acknowledged stays the best knowledge"


async def test_a_run_reads_wix_by_the_page_not_by_the_subject(newest_wins: World) -> None:
    world = newest_wins
    for index in range(150):
        await world.decide(f"s-{index:03d}", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    before = len(await wix_requests(world))
    finished = await run(world, providers=["wix"])
    reads = (await wix_requests(world))[before:]
    assert finished.counts["wix"]["read"] == 150
    assert len(reads) == 4, "two pages of subjects, one query per channel each: not 300 lookups"
    assert {r["body"]["query"]["cursorPaging"]["limit"] for r in reads} == {100}


async def test_a_run_stopped_midway_resumes_after_its_last_chunk(newest_wins: World) -> None:
    world = newest_wins
    world.gateway.settings.reconcile.chunk = 2
    for index in range(5):
        await synced(world, f"cust-{index}")
    queued = await world.gateway.reconciler.start(["masivo"], None)
    claimed = await world.gateway.store.runs.claim(world.now, 60)
    assert claimed is not None
    seen: list[int] = []

    def stop_after_first_chunk(progress: RunOut) -> None:
        seen.append(progress.counts["subjects"])
        raise KeyboardInterrupt  # the worker dies right after checkpointing

    with pytest.raises(KeyboardInterrupt):
        await world.gateway.reconciler.execute(claimed, world.gateway.worker, stop_after_first_chunk)
    assert seen == [2]
    assert await world.gateway.store.runs.claim(world.now, 60) is None, "still leased to the dead worker"
    lease = timedelta(seconds=world.gateway.settings.reconcile.lease_s + 1)  # renewed at each chunk
    resumed = await world.gateway.store.runs.claim(world.now + lease, 60)
    assert resumed is not None and resumed.id == queued.id
    finished = await world.gateway.reconciler.execute(resumed, world.gateway.worker)
    assert finished.counts["subjects"] == 5 and finished.counts["masivo"]["read"] == 5


async def test_the_api_lists_rows_with_counts_and_runs_are_carried_out_by_the_worker(newest_wins: World) -> None:
    world = newest_wins
    await synced(world)
    world.gateway.settings.tokens.append(ApiToken(name="admin", sha256=hash_token("admin-token-0123456789")))
    world.gateway.settings.reconcile.poll_s = 0.01
    app = create_app(world.gateway, run_worker=False)
    auth = {"Authorization": "Bearer admin-token-0123456789"}
    await revoke_at_wix(world, EMAIL, (NOW + timedelta(minutes=5)).isoformat())
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        started = await api.post("/v1/reconciliation/runs", json={"providers": ["wix"]}, headers=auth)
        assert started.status_code == 202 and started.json()["status"] == "queued"
        world.now += timedelta(seconds=1)
        assert await world.gateway.runs.step(), "a worker takes the queued run"
        done = (await api.get(started.headers["location"], headers=auth)).json()
        assert done["status"] == "done" and done["counts"]["wix"]["adopted"] == 1
        pending = (await api.get("/v1/reconciliation", headers=auth)).json()["counts"]
        assert (pending["in_sync"], pending["pending"]) == (1, 2), "wix adopted; masivo and intempt to be told"
        world.now += timedelta(seconds=1)
        await world.gateway.worker.drain()
        page = (await api.get("/v1/reconciliation", headers=auth)).json()
        assert page["counts"] == {
            "in_sync": 2,
            "pending": 0,
            "failed": 0,
            "diverged": 0,
            "unobservable": 1,
        }
        only = (await api.get("/v1/reconciliation", params={"provider": "wix"}, headers=auth)).json()
        assert [row["provider"] for row in only["items"]] == ["wix"]
        bad = await api.post("/v1/reconciliation/runs", json={"providers": ["intempt"]}, headers=auth)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "providers"


async def test_a_scheduled_run_is_started_once_per_period_whatever_the_number_of_workers(newest_wins: World) -> None:
    world = newest_wins
    await synced(world)
    world.gateway.settings.reconcile.every_s = 3600
    other_worker = RunLoop(world.gateway.reconciler, world.gateway.worker)
    assert await world.gateway.runs.step() and not await other_worker.step(), "one run for this hour, run once"
    world.now += timedelta(minutes=30)
    assert not await other_worker.step(), "still the same period"
    world.now += timedelta(minutes=31)
    assert await other_worker.step(), "the next period's run"
    async with world.gateway.store.engine.connect() as conn:
        scheduled = (await conn.execute(select(func.count()).select_from(reconciliation_runs))).scalar_one()
    assert scheduled == 2


async def test_runs_asked_for_again_are_joined_and_the_queue_is_capped(world: World) -> None:
    world.gateway.settings.tokens.append(ApiToken(name="admin", sha256=hash_token("admin-token-0123456789")))
    world.gateway.settings.reconcile.max_queued = 2
    app = create_app(world.gateway, run_worker=False)
    auth = {"Authorization": "Bearer admin-token-0123456789"}
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://g") as api:
        first = await api.post("/v1/reconciliation/runs", json={}, headers=auth)
        again = [await api.post("/v1/reconciliation/runs", json={}, headers=auth) for _ in range(20)]
        assert first.status_code == 202 and {r.status_code for r in again} == {200}
        assert {r.json()["id"] for r in again} == {first.json()["id"]}, "the same queued run, joined"
        other = await api.post("/v1/reconciliation/runs", json={"subjects": ["b", "a", "a"]}, headers=auth)
        assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
        same = await api.post("/v1/reconciliation/runs", json={"subjects": ["a", "b"]}, headers=auth)
        assert same.status_code == 200 and same.json()["id"] == other.json()["id"]
        refused = await api.post("/v1/reconciliation/runs", json={"providers": ["wix"]}, headers=auth)
        assert refused.status_code == 429 and refused.json()["type"].endswith("/too-many-runs")
        assert int(refused.headers["retry-after"]) >= 1
        world.now += timedelta(seconds=1)
        assert await world.gateway.runs.step(), "a worker takes a queued run: room for one more"
        assert (await api.post("/v1/reconciliation/runs", json={"providers": ["wix"]}, headers=auth)).status_code == 202
    async with world.gateway.store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(reconciliation_runs))).scalar_one() == 3

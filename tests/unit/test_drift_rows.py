"""The drift view's stored rows: every write path marks the subjects whose rows it changes, in its
own transaction; the refresher stores them; the view and its counts equal the rows computed from
scratch, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from adapters.base import Observation
from gateway.cli import app as cli
from gateway.config import load_settings
from gateway.reconcile import rows as rows_module
from gateway.reconcile.runner import Reconciler
from gateway.service import Gateway
from gateway.store import Store
from gateway.store.snapshot import Chunk
from gateway.store.tables import reconciliation_rows
from schemas.api import DeliveryStatus, ReconciliationPage, SyncStatus
from schemas.consent import Decision
from tests.world import NOW, World

WIX_REMOVE = "/wix/marketing-consent/v1/marketing-consent/remove"


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    world = World(store, providers={name: {"drift_policy": "report_only"} for name in ("masivo", "wix")})
    yield world
    await world.gateway.worker.stop()
    await world.control.aclose()


async def marked(world: World) -> set[str]:
    return set(await world.gateway.store.drift_rows.stale(10_000))


async def settled(world: World) -> None:
    """Every row stored, no subject marked."""
    await world.gateway.reconciler.refresher.catch_up()
    assert await marked(world) == set()


async def test_a_recorded_decision_marks_its_subject(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.decide("cust-2", 10, email_marketing="granted")
    assert await marked(world) == {"cust-1", "cust-2"}
    await settled(world)
    await world.decide("cust-1", 20, email_marketing="denied")
    assert await marked(world) == {"cust-1"}


async def test_a_finished_delivery_marks_its_subject(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await settled(world)
    await world.gateway.worker.drain()  # three deliveries claimed and finished
    assert await marked(world) == {"cust-1"}


async def test_a_replayed_dead_delivery_marks_its_subject(world: World) -> None:
    await world.faults("masivo", error_rate=1, status=400)
    decision = await world.decide("cust-1", 10, email_marketing="granted")
    await world.gateway.worker.drain()
    dead = [d for d in (await world.gateway.decision(decision)).deliveries if d.status is DeliveryStatus.dead]
    await settled(world)
    await world.gateway.replay(dead[0].id)
    assert await marked(world) == {"cust-1"}


async def test_a_stored_observation_marks_its_subject(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await world.decide("cust-2", 10, email_marketing="granted")
    await settled(world)
    seen = {("cust-2", "wix"): Observation(held={}, changed_at={}), ("cust-2", "masivo"): "read failed: 503"}
    await world.gateway.store.observations.save(None, seen, world.now)
    assert await marked(world) == {"cust-2"}


async def test_an_erasure_marks_its_subject_and_its_rows_go(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    await settled(world)
    await world.gateway.erase("cust-1", "admin")
    assert await marked(world) == {"cust-1"}
    await settled(world)
    assert await world.gateway.store.drift_rows.of(["cust-1"]) == {}


async def test_a_shared_address_marks_every_holder(world: World) -> None:
    """Wix keeps one consent per address: one holder's decision, arrival or departure changes the
    others' Wix rows."""
    await world.decide("cust-1", 10, email="shared@example.com", email_marketing="granted")
    await world.decide("cust-2", 11, email="shared@example.com", email_marketing="granted")
    await world.decide("cust-3", 12, email_marketing="granted")
    await settled(world)
    await world.decide("cust-2", 20, email="shared@example.com", email_marketing="denied")
    assert await marked(world) == {"cust-1", "cust-2"}
    await settled(world)
    await world.decide("cust-2", 30, email="cust-2@example.com", email_marketing="denied")  # it leaves
    assert await marked(world) == {"cust-1", "cust-2"}
    await settled(world)
    await world.decide("cust-3", 40, email="shared@example.com", email_marketing="granted")  # it joins
    assert await marked(world) == {"cust-1", "cust-3"}


async def test_a_provider_new_or_changed_marks_every_subject(store: Store) -> None:
    first = World(store)
    await first.decide("cust-1", 10, email_marketing="granted")
    await first.decide("cust-2", 10, email_marketing="granted")
    await first.gateway.reconciler.refresher.catch_up()
    await first.control.aclose()
    second = World(store, providers={"masivo": {"purposes": {"email_marketing": "email_marketing"}}})
    await second.gateway.reconciler.refresher.settle()
    assert set(await store.drift_rows.stale(10)) == {"cust-1", "cust-2"}
    await second.control.aclose()


async def test_a_change_after_the_refresher_read_the_marks_keeps_its_mark(world: World) -> None:
    """The refresher deletes only the marks it read before the inputs: a write in between stays marked."""
    rows = world.gateway.store.drift_rows
    await world.decide("cust-1", 10, email_marketing="granted")
    marks = [mark for mark, _ in await rows.marks(["cust-1"])]
    await world.decide("cust-1", 20, email_marketing="denied")
    assert await rows.store(marks, {"cust-1": []}, world.now) == 1
    assert await marked(world) == {"cust-1"}
    assert await rows.store(marks, {"cust-1": []}, world.now) == 0  # another refresher's marks: nothing stored


async def test_the_refresher_reads_and_computes_a_chunk_in_slices(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It runs in the worker's process: a chunk computed in one go held the event loop, and the pushes in
    flight, for tens of milliseconds. Every subject's rows are stored all the same."""
    monkeypatch.setattr(rows_module, "SLICE", 2)
    refresher = world.gateway.reconciler.refresher
    read: list[int] = []
    chunk = refresher.snapshots.chunk

    async def spied(ids: Sequence[str]) -> Chunk:
        read.append(len(ids))
        return await chunk(ids)

    monkeypatch.setattr(refresher.snapshots, "chunk", spied)
    subjects = [f"cust-{n}" for n in range(5)]
    for subject in subjects:
        await world.decide(subject, 10, email_marketing="granted")
    assert await refresher.refresh(10) == 5
    assert read == [2, 2, 1]
    assert await marked(world) == set()
    stored = await world.gateway.store.drift_rows.of(subjects)
    assert {subject for subject, _ in stored} == set(subjects)
    assert len(stored) == 5 * len(world.gateway.adapters)


async def scenario(world: World) -> None:
    """Rows of every status: in sync, pending, failed, diverged, unobservable, on a shared address."""
    for n in range(12):
        await world.decide(f"cust-{n:02d}", 10, email_marketing="granted", sms_marketing="denied")
    await world.decide("cust-20", 10, email="shared@example.com", email_marketing="granted")
    await world.decide("cust-21", 10, email="shared@example.com", email_marketing="denied")
    await world.gateway.worker.drain()
    await world.readback()
    await world.faults("masivo", error_rate=1, status=400)
    for n in range(3):
        await world.decide(f"cust-{n:02d}", 30, email_marketing="denied")
    await world.gateway.worker.drain()
    await world.faults("masivo", error_rate=0)
    when = (world.now + timedelta(seconds=1)).isoformat()
    revoke = {"details": {"type": "EMAIL", "email": "cust-07@example.com"}}
    revoke["lastRevokeActivity"] = {"source": "REVOKE_LINK", "updatedDate": when}
    headers = {"Authorization": "someone-elses-key", "wix-site-id": "site"}
    response = await world.control.post(f"{WIX_REMOVE}", json=revoke, headers=headers)
    assert response.status_code == 200, response.text
    await world.readback("wix")
    await world.decide("cust-05", 40, push_notifications="granted")  # pending: not delivered yet


async def from_scratch(reconciler: Reconciler, **filters: object) -> ReconciliationPage:
    """The page as the view computes it with every row computed live."""
    inline = reconciler.settings.reconcile.stale_inline
    reconciler.settings.reconcile.stale_inline = -1  # no backlog is ever small enough: every row live
    try:
        return await reconciler.view(**filters)  # type: ignore[arg-type]
    finally:
        reconciler.settings.reconcile.stale_inline = inline


FILTERS: list[dict[str, object]] = [
    {},
    {"provider": "wix"},
    {"status": {SyncStatus.diverged, SyncStatus.failed}},
    {"status": {SyncStatus.pending}, "provider": "masivo"},
    {"limit": 7},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(sorted(f)) or "all")
async def test_the_view_equals_the_rows_computed_from_scratch(world: World, filters: dict[str, object]) -> None:
    await scenario(world)
    reconciler = world.gateway.reconciler
    await world.decide("cust-03", 50, sms_marketing="granted")  # one subject marked: computed live
    expected = await from_scratch(reconciler, **filters)
    assert {s for s, n in expected.counts.items() if n} >= ({SyncStatus.in_sync} if not filters else set())
    cursor: str | None = None
    while True:  # every page, by cursor, as from scratch
        page = await reconciler.view(**filters, cursor=cursor)  # type: ignore[arg-type]
        wanted = await from_scratch(reconciler, **filters, cursor=cursor)
        assert page == wanted
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert await world.gateway.store.drift_rows.stale(10) == []  # the view stored the marked one itself
    async with world.gateway.store.engine.connect() as conn:
        assert (await conn.execute(reconciliation_rows.select().limit(1))).first() is not None


async def test_a_scenario_covers_every_status(world: World) -> None:
    await scenario(world)
    page = await world.gateway.reconciler.view()
    assert {status for status, n in page.counts.items() if n} == set(SyncStatus)


async def test_the_check_reports_a_stored_row_that_disagrees(world: World) -> None:
    await world.decide("cust-1", 10, email_marketing="granted")
    refresher = world.gateway.reconciler.refresher
    await refresher.catch_up()
    assert await refresher.check() == []
    await corrupt(world.gateway.store, "cust-1", "wix")
    [found] = await refresher.check()
    assert (found.subject_id, found.provider) == ("cust-1", "wix")
    assert found.computed is not None and found.computed["status"] == "pending"
    assert found.stored is not None and found.stored["status"] == "diverged"
    await refresher.catch_up()
    await world.decide("cust-1", 20, email_marketing="denied")  # marked again: the row is computed anew
    assert await refresher.check() == []


async def corrupt(store: Store, subject: str, provider: str) -> None:
    """A stored row changed behind the refresher's back, as a forgotten mark would leave it."""
    rows = reconciliation_rows
    async with store.engine.begin() as conn:
        where = (rows.c.subject_id == subject) & (rows.c.provider == provider)
        await conn.execute(update(rows).where(where).values(status="diverged"))


def test_reconcile_check_exits_1_when_a_stored_row_disagrees(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "gateway.db"}"\n'
        '[providers.masivo]\napi_key = "not-used-0123"\nbase_url = "http://127.0.0.1:9"\n'
        '[providers.wix]\napi_key = "not-used-0123"\nsite_id = "s"\nbase_url = "http://127.0.0.1:9"\n'
    )

    async def stored(broken: bool) -> None:
        gateway = Gateway(load_settings(config))
        await gateway.store.upgrade()
        if not broken:
            decided = {"subject": {"id": "cust-1"}, "purposes": {"analytics": "granted"}, "occurred_at": NOW}
            await gateway.record(Decision.model_validate(decided, strict=False))
            await gateway.reconciler.refresher.catch_up()
        else:
            await corrupt(gateway.store, "cust-1", "masivo")
        await gateway.stop()

    asyncio.run(stored(broken=False))
    fine = CliRunner().invoke(cli, ["reconcile", "--check", "--config", str(config), "--format", "json"])
    assert (fine.exit_code, json.loads(fine.stdout)) == (0, {"disagreeing": []}), fine.output
    asyncio.run(stored(broken=True))
    broken = CliRunner().invoke(cli, ["reconcile", "--check", "--config", str(config)], env={"COLUMNS": "200"})
    assert broken.exit_code == 1 and "cust-1" in broken.stdout and "1 stored row(s) disagree" in broken.output

"""Backfills against the simulators: a provider that lost its data gets every live subject's state
again, as first syncs, a bounded number at a time; a stopped backfill resumes after its cursor."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.cli import app
from gateway.reconcile.backfill import Backfiller
from gateway.store import Store
from gateway.store.tables import decisions, deliveries
from schemas.api import BackfillOut, RunStatus
from schemas.consent import Decision
from tests.e2e.conftest import ADMIN, DECISION, READER, WRITER, auth
from tests.processes import Processes
from tests.world import NOW, World, phone_of

SUBJECTS = [f"cust-{n:02d}" for n in range(12)]


async def synced(world: World) -> None:
    """Every subject decided and pushed; one more maps nothing at Wix, one more is erased; then Wix
    loses everything."""
    for minute, subject in enumerate(SUBJECTS):
        await world.decide(subject, minute, email_marketing="granted", sms_marketing="denied")
    await world.decide("cust-analytics", 30, analytics="granted")
    await world.decide("cust-gone", 31, email_marketing="granted")
    await world.gateway.worker.drain()
    world.now += timedelta(minutes=1)
    await world.gateway.erase("cust-gone", "test")
    await world.gateway.worker.drain()
    await world.gateway.erasures.step()
    await world.control.post("/wix/_reset")


async def backfilled(
    world: World, backfill_id: str, *, steps: int = 1000, tick: timedelta = timedelta(0)
) -> BackfillOut:
    """Driven as a worker's chores do, step by step, the worker delivering between steps (``tick``
    apart, so retries fall due)."""
    for _ in range(steps):
        await world.gateway.backfiller.step()
        await world.gateway.worker.drain()
        world.now += tick
        found = await world.gateway.backfill(backfill_id)
        if found.status is RunStatus.done:
            return found
    raise AssertionError("the backfill never finished")


def wix_addresses(state: dict[str, object]) -> set[str]:
    consents = state["consents"]
    assert isinstance(consents, dict)
    return {c["details"].get("email") or c["details"].get("phone") for c in consents.values()}


async def test_a_backfill_pushes_every_live_subject_to_the_provider_and_counts_them(world: World) -> None:
    await synced(world)
    preview = await world.gateway.preview_backfill("wix")
    assert (preview.subjects, preview.mapped, preview.nothing) == (13, 12, 1), "the erased one is not counted"

    backfill, created = await world.gateway.start_backfill("wix")
    assert created and backfill.status is RunStatus.queued and backfill.subjects == 13
    joined, again = await world.gateway.start_backfill("wix")
    assert not again and joined.id == backfill.id, "a second backfill of the provider joins the first"

    done = await backfilled(world, backfill.id)
    assert done.outcomes == {"succeeded": 12, "nothing": 1} and done.enqueued == 12 and not done.failures
    assert done.finished == 13 and done.cursor == "cust-analytics"
    held = wix_addresses((await world.inspect("wix"))["state"])
    assert len(held) == 24 and "cust-00@example.com" in held, "an email and a phone consent per subject"
    masivo = await world.inspect("masivo")
    assert not [r for r in masivo["requests"] if r["method"] != "GET" and "cust-00" in str(r)][2:], "only Wix is pushed"

    fresh, created = await world.gateway.start_backfill("wix")
    assert created and fresh.id != backfill.id, "a finished backfill is not joined"


async def test_a_backfill_keeps_a_bounded_number_of_its_pushes_outstanding(world: World) -> None:
    world.gateway.backfiller.settings = world.gateway.settings.backfill.model_copy(
        update={"chunk": 2, "max_outstanding": 5}
    )
    await synced(world)
    backfill, _ = await world.gateway.start_backfill("wix")
    assert await world.gateway.backfiller.step()
    assert await world.gateway.store.backfills.outstanding(backfill.id) == 5
    assert not await world.gateway.backfiller.step(), "no room: nothing more is queued"
    assert (await world.gateway.backfill(backfill.id)).enqueued == 5
    done = await backfilled(world, backfill.id)
    assert done.outcomes["succeeded"] == 12


async def test_a_stopped_backfill_resumes_after_its_cursor(world: World) -> None:
    settings = world.gateway.settings.backfill.model_copy(update={"chunk": 5, "max_outstanding": 5})
    world.gateway.backfiller.settings = settings
    await synced(world)
    backfill, _ = await world.gateway.start_backfill("wix")
    await world.gateway.backfiller.step()  # one driver enqueues a chunk, its pushes are sent, and it stops
    await world.gateway.worker.drain()
    stopped = await world.gateway.backfill(backfill.id)
    assert (stopped.cursor, stopped.outcomes) == ("cust-04", {"succeeded": 5})

    other = Backfiller(world.gateway.store, world.gateway.adapters, settings, world.gateway.clock, world.gateway.worker)
    assert not await other.step(), "its lease holds: nobody else drives it meanwhile"
    world.now += timedelta(seconds=settings.lease_s + 1)
    world.gateway.backfiller = other  # a new process takes over once the lease ran out
    done = await backfilled(world, backfill.id)
    assert done.outcomes == {"succeeded": 12, "nothing": 1}
    async with world.gateway.store.engine.connect() as conn:
        repairs = select(decisions.c.subject_id).where(decisions.c.body["source"].as_string() == "repair")
        assert sorted((await conn.execute(repairs)).scalars()) == SUBJECTS, "every subject enqueued once, none twice"
    assert len(wix_addresses((await world.inspect("wix"))["state"])) == 24


async def test_a_dry_run_changes_nothing(world: World) -> None:
    await synced(world)
    async with world.gateway.store.engine.connect() as conn:
        before = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
    preview = await world.gateway.preview_backfill("wix")
    assert preview.dry_run and preview.mapped == 12
    async with world.gateway.store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one() == before
    assert wix_addresses((await world.inspect("wix"))["state"]) == set()


async def test_failures_are_listed_with_their_reasons_and_no_contact_data(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await synced(world)
    await world.faults("wix", status=400, error_rate=1.0)
    backfill, _ = await world.gateway.start_backfill("wix")
    # The bulk upsert refused whole says nothing of any one item: each is retried alone, and refused.
    done = await backfilled(world, backfill.id, tick=timedelta(hours=1))
    assert done.outcomes == {"dead": 12, "nothing": 1}
    assert [f.subject_id for f in done.failures] == SUBJECTS
    assert all(f.error and f.status_code == 400 for f in done.failures)
    shown = done.model_dump_json()
    assert "@example.com" not in shown and "+1415" not in shown


# -- the admin API ---------------------------------------------------------------------------


async def test_the_api_queues_a_backfill_a_worker_drives_and_reports_it(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))).status_code == 202
    dry = await client.post("/v1/providers/fake/backfills", json={"dry_run": True}, headers=auth(ADMIN))
    assert dry.status_code == 200 and dry.json() == {
        "provider": "fake",
        "dry_run": True,
        "subjects": 1,
        "mapped": 1,
        "nothing": 0,
    }
    started = await client.post("/v1/providers/fake/backfills", headers=auth(ADMIN))
    assert started.status_code == 202 and started.headers["location"] == f"/v1/backfills/{started.json()['id']}"
    joined = await client.post("/v1/providers/fake/backfills", json={"dry_run": False}, headers=auth(ADMIN))
    assert joined.status_code == 202 and joined.json()["id"] == started.json()["id"]
    gateway = client.gateway  # type: ignore[attr-defined]
    for _ in range(50):
        await gateway.backfiller.step()  # the chores' step, without waiting for their poll
        await gateway.worker.drain()
        found = await client.get(started.headers["location"], headers=auth(ADMIN))
        if found.json()["status"] == "done":
            break
    answer = found.json()
    assert answer["outcomes"] == {"succeeded": 1} and answer["enqueued"] == 1 and answer["failures"] == []
    assert "ana@example.com" not in found.text and "+14155550100" not in found.text


async def test_the_api_refuses_unknown_providers_bad_bodies_and_other_scopes(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/v1/providers/nowhere/backfills", headers=auth(ADMIN))
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["title"] == "No such provider" and "nowhere" in unknown.json()["detail"]
    bad = await client.post("/v1/providers/fake/backfills", json={"dry_run": "yes"}, headers=auth(ADMIN))
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["dry_run"]
    extra = await client.post("/v1/providers/fake/backfills", json={"subjects": ["a"]}, headers=auth(ADMIN))
    assert extra.status_code == 422 and [e["field"] for e in extra.json()["errors"]] == ["subjects"]
    for token in (WRITER, READER):
        refused = await client.post("/v1/providers/fake/backfills", headers=auth(token))
        assert refused.status_code == 403
    assert (await client.get(f"/v1/backfills/{uuid.uuid4()}", headers=auth(ADMIN))).status_code == 404
    assert (await client.get("/v1/backfills/not-an-id", headers=auth(ADMIN))).status_code == 404
    assert (await client.get(f"/v1/backfills/{uuid.uuid4()}", headers=auth(READER))).status_code == 403


async def test_the_openapi_document_describes_both_operations(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    start = paths["/v1/providers/{provider}/backfills"]["post"]
    assert set(start["responses"]) == {"200", "202", "default"} and start["security"] == [{"bearer": ["admin"]}]
    assert start["parameters"][0]["schema"] == {"enum": ["fake"]}
    assert paths["/v1/backfills/{backfill_id}"]["get"]["security"] == [{"bearer": ["admin"]}]


# -- the command ---------------------------------------------------------------------------


def test_the_command_backfills_here_with_a_receipt_and_counts_a_dry_run(
    tmp_path: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = asyncio.run(processes.simulators())
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'database_url = "{url}"\n\n[providers.wix]\nbase_url = "{base}/wix"\napi_key = "${{CG_WIX_KEY}}"\n'
        'site_id = "site"\nrate_per_minute = 60000.0\n'
    )
    monkeypatch.setenv("CG_WIX_KEY", "wix-key-backfill-0123456789")

    async def decided() -> None:  # before Wix was enabled: no delivery to it
        store = Store.from_url(url)
        await store.upgrade()
        for n in range(5):
            body = DECISION | {
                "subject": {"id": f"cli-{n}", "email": f"cli-{n}@example.com", "phone": phone_of(str(n))}
            }
            await store.ledger.record(Decision.model_validate(body, strict=False), {}, NOW)
        await store.close()

    asyncio.run(decided())
    runner = CliRunner()
    dry = runner.invoke(
        app, ["backfill", "--provider", "wix", "--dry-run", "--config", str(config), "--format", "json"]
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {"provider": "wix", "dry_run": True, "subjects": 5, "mapped": 5, "nothing": 0}

    done = runner.invoke(app, ["backfill", "--provider", "wix", "--config", str(config), "--format", "json"])
    assert done.exit_code == 0, done.output
    receipt = json.loads(done.stdout)
    assert receipt["status"] == "done" and receipt["outcomes"] == {"succeeded": 5} and receipt["failures"] == []
    assert "@example.com" not in done.output and "+1415" not in done.output, "no contact data in the receipt or log"
    wix = httpx.get(f"{base}/wix/_inspect").json()["state"]
    assert len(wix_addresses(wix)) == 10

    table = runner.invoke(app, ["backfill", "--provider", "wix", "--config", str(config)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "succeeded" in table.stdout and "5" in table.stdout
    unknown = runner.invoke(app, ["backfill", "--provider", "nowhere", "--config", str(config)])
    assert unknown.exit_code == 2 and "nowhere" in unknown.output

"""People who leave: removal at every provider, then their data out of the store; a tombstone."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from gateway.store import Store
from gateway.store.ledger import SubjectErased
from gateway.store.tables import deliveries, delivery_attempts, metadata, observations
from schemas.api import DeliveryStatus, ErasureStatus
from schemas.consent import Decision
from tests.conftest import upgraded
from tests.e2e.conftest import ADMIN, DECISION, READER, WRITER, auth, replayable
from tests.world import TCF, World

EMAIL, PHONE = "noor.haddad@example.com", "+14155550188"
NOTE = "call after six, moved to Porto"


def decision(world: World, **extra: Any) -> Decision:
    body = {
        "subject": {"id": "cust-5", "email": EMAIL, "phone": PHONE},
        "purposes": {"email_marketing": "granted", "sms_marketing": "granted", "push_notifications": "granted"},
        "tcf_string": TCF,
        "note": f"signed up as {EMAIL}",
        "vendors": {"meta": True},
        "occurred_at": world.now - timedelta(minutes=5),
    }
    return Decision.model_validate(body | extra, strict=False)


async def everything_stored(world: World) -> str:
    """Every row of every table, as text: what a search for the person's data would find."""
    async with world.gateway.store.engine.connect() as conn:
        rows = [row for table in metadata.sorted_tables for row in (await conn.execute(select(table))).all()]
    return "\n".join(map(str, rows))


async def erased(world: World) -> str:
    """A synced subject erased; returns the erasure's id once the removals ran."""
    await world.gateway.record(decision(world))
    await world.gateway.worker.drain()
    world.now += timedelta(minutes=1)
    found = await world.gateway.erasures.request("cust-5", "cli")
    assert found is not None
    erasure, started = found
    assert started and erasure.status is ErasureStatus.pending
    assert {d.provider for d in erasure.deliveries} == {"masivo", "wix", "intempt"}
    await world.gateway.worker.drain()
    return erasure.id


async def test_each_provider_removes_the_person_then_the_store_forgets_them(world: World) -> None:
    erasure_id = await erased(world)
    assert (await world.inspect("wix"))["state"]["consents"] == {}, "Wix deletes the consents"
    masivo = (await world.inspect("masivo"))["state"]["effective_purposes"]["cust-5"]
    assert not any(masivo.values()), "Masivo has no delete: every purpose is pushed false"
    intempt = (await world.inspect("intempt"))["requests"]
    assert {r["body"]["action"] for r in intempt[-3:]} == {"reject"}, "Intempt: reject every mapped category"
    assert EMAIL in await everything_stored(world), "the store keeps the address until the removals are done"

    metric = world.gateway.metrics.registry.get_sample_value
    assert metric("consent_gateway_erasures_total", {"stage": "requested"}) == 1
    assert metric("consent_gateway_erasures_total", {"stage": "completed"}) is None, "not before its removals"
    assert await world.gateway.erasures.step()
    assert metric("consent_gateway_erasures_total", {"stage": "completed"}) == 1
    done = await world.gateway.erasures.get(erasure_id)
    assert done is not None and done.status is ErasureStatus.done and done.completed_at is not None
    assert done.requested_by == "cli"
    stored = await everything_stored(world)
    for personal in (EMAIL, PHONE, "noor.haddad%40example.com", TCF, "signed up as", "meta"):
        assert personal not in stored, personal
    history = await world.gateway.store.ledger.history("cust-5", 10)
    assert [entry.decision.source for entry in history] == ["erasure", "web"]  # non-identifying history stays
    assert history[1].decision.purposes["email_marketing"] == "granted"
    assert not await world.gateway.erasures.step()
    view = await world.gateway.reconciler.view(provider=None, status=None, subject="cust-5", cursor=None, limit=10)
    assert view.items == [], "an erased subject is not reconciled: there is nothing of theirs to compare"


async def test_a_later_decision_is_refused_unless_it_recreates_the_subject(world: World) -> None:
    await erased(world)
    with pytest.raises(SubjectErased, match="still under way"):
        await world.gateway.record(decision(world, recreate=True))
    assert await world.gateway.erasures.step()
    world.now += timedelta(minutes=1)
    with pytest.raises(SubjectErased, match='send "recreate": true'):
        await world.gateway.record(decision(world, occurred_at=world.now))
    again = await world.gateway.erasures.request("cust-5", "cli")
    assert again is not None and again[1] is False and again[0].status is ErasureStatus.done
    recreated = await world.gateway.record(decision(world, occurred_at=world.now, recreate=True))
    state = await world.gateway.store.ledger.subject_state("cust-5")
    assert recreated.decision.recreate and state is not None and state.erased_at is None and state.email == EMAIL


async def test_a_dead_removal_holds_the_erasure_until_it_is_replayed(world: World) -> None:
    await world.gateway.record(decision(world))
    await world.gateway.worker.drain()
    await world.faults("wix", status=400, error_rate=1.0)
    found = await world.gateway.erasures.request("cust-5", "token:admin")
    assert found is not None
    await world.gateway.worker.drain()
    pending = await world.gateway.erasures.get(found[0].id)
    assert pending is not None
    assert {d.provider: d.status for d in pending.deliveries}["wix"] is DeliveryStatus.dead
    assert not await world.gateway.erasures.step() and EMAIL in await everything_stored(world)
    await world.faults("wix", error_rate=0)
    await world.gateway.store.outbox.replay(world.now, provider="wix")
    await world.gateway.worker.drain()
    assert await world.gateway.erasures.step()
    assert EMAIL not in await everything_stored(world)


async def finished(client: httpx.AsyncClient, erasure_id: str) -> dict[str, Any]:
    """The erasure once done: the app's own worker and chores run beside the test, so the test
    drives them too and waits for the event, not for a time."""
    gateway = client.gateway  # type: ignore[attr-defined]
    for _ in range(500):
        await gateway.worker.drain()
        await gateway.erasures.step()
        found = (await client.get(f"/v1/erasures/{erasure_id}", headers=auth(ADMIN))).json()
        if found["status"] == "done":
            return dict(found)
        await asyncio.sleep(0.01)
    raise AssertionError(f"erasure {erasure_id} not done: {found}")


async def test_the_api_erases_audits_and_refuses(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "signup-1"} | auth(WRITER)
    signup = {**DECISION, "note": NOTE}
    assert (await client.post("/v1/consents", json=signup, headers=key)).status_code == 202
    assert (await client.delete("/v1/subjects/cust-42", headers=auth(WRITER))).status_code == 403
    assert (await client.delete("/v1/subjects/nobody", headers=auth(ADMIN))).status_code == 404
    started = await client.delete("/v1/subjects/cust-42", headers=auth(ADMIN))
    assert started.status_code == 202, started.text
    erasure = started.json()
    assert started.headers["location"] == f"/v1/erasures/{erasure['id']}"
    assert erasure["requested_by"] == "token:admin" and erasure["status"] == "pending"
    again = await client.delete("/v1/subjects/cust-42", headers=auth(ADMIN))
    assert again.status_code == 200 and again.json()["id"] == erasure["id"]
    refused = await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))
    assert refused.status_code == 409 and refused.json()["errors"][0]["field"] == "subject.id"
    batch = await client.post("/v1/consents:batch", json={"decisions": [DECISION]}, headers=auth(WRITER))
    assert batch.json()["results"][0]["problem"]["status"] == 409
    assert (await finished(client, erasure["id"]))["status"] == "done"
    gone = await client.get("/v1/subjects/cust-42", headers=auth(READER))
    assert gone.status_code == 410 and gone.json()["type"].endswith("/subject-erased")
    assert (await client.get("/v1/subjects/cust-42/history", headers=auth(READER))).status_code == 410
    repush = await client.post("/v1/subjects/cust-42/repush", json={}, headers=auth(ADMIN))
    assert repush.status_code == 409
    replayed = await client.post("/v1/consents", json=signup, headers=key)  # the key stays bound, its answer scrubbed
    assert replayed.status_code == 202 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["decision"]["subject"] == {"id": "cust-42", "email": None, "phone": None}
    assert DECISION["subject"]["email"] not in replayed.text and NOTE not in replayed.text


async def test_a_keyed_batch_resent_after_one_person_left_replays_and_records_no_one_twice(
    client: httpx.AsyncClient,
) -> None:
    leaving = {**DECISION, "note": NOTE}
    other = {**DECISION, "subject": {"id": "cust-43", "email": "sam@example.com"}}
    key = {"Idempotency-Key": "import-7"} | auth(WRITER)
    first = await client.post("/v1/consents:batch", json={"decisions": [leaving, other]}, headers=key)
    assert first.status_code == 200, first.text
    started = await client.delete("/v1/subjects/cust-42", headers=auth(ADMIN))
    assert started.status_code == 202 and (await finished(client, started.json()["id"]))["status"] == "done"

    again = await client.post("/v1/consents:batch", json={"decisions": [leaving, other]}, headers=key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    history = await client.get("/v1/subjects/cust-43/history", headers=auth(READER))
    assert len(history.json()["items"]) == 1, "the other person's decision is not recorded twice"
    results = again.json()["results"]
    assert replayable(results[1]) == replayable(first.json()["results"][1]), "the other person's answer, whole"
    assert results[0]["decision"]["decision"]["subject"] == {"id": "cust-42"}
    assert DECISION["subject"]["email"] not in again.text and NOTE not in again.text


class Echoing:
    """Intempt refusing pushes (while ``on``) with an error that repeats the note the push carried
    (its ``message``) and the address, URL-encoded: what a provider's error text may hold."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self, provider: str, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        async def refuse(request: httpx.Request) -> httpx.Response:
            if not self.on or request.method != "POST":
                return await inner.handle_async_request(request)
            echoed = f"Field 'message' too long: {json.loads(request.content).get('message')!r} for {quote(EMAIL)}"
            return httpx.Response(400, json={"error": "Invalid request", "message": echoed})

        return httpx.MockTransport(refuse) if provider == "intempt" else inner


async def error_texts(world: World) -> list[str]:
    """What the delivery and its attempt hold of the provider's error."""
    async with world.gateway.store.engine.connect() as conn:
        last = (await conn.execute(select(deliveries.c.last_error).where(deliveries.c.provider == "intempt"))).all()
        attempts = await conn.execute(select(delivery_attempts.c.error).where(delivery_attempts.c.error.is_not(None)))
        return [text for (text,) in [*last, *attempts.all()] if text]


async def observed(world: World) -> int:
    async with world.gateway.store.engine.connect() as conn:
        return len((await conn.execute(select(observations).where(observations.c.subject_id == "cust-5"))).all())


async def test_what_a_provider_echoes_is_never_logged_and_is_gone_after_erasure(store: Store) -> None:
    echo = Echoing()
    world = World(store, wrap_transport=echo)
    try:
        with capture_logs() as logs:
            recorded = await world.gateway.record(decision(world, note=NOTE))
            await world.gateway.worker.drain()
        dead = [line for line in logs if line["event"] == "delivery_dead"]
        assert dead and all(NOTE not in str(line) for line in dead), dead
        assert (await world.statuses(recorded.id))["intempt"] is DeliveryStatus.dead
        texts = await error_texts(world)
        assert len(texts) == 2 and all("too long: '<personal>'" in text for text in texts), texts
        assert all(quote(EMAIL) in text for text in texts), "an encoded address in an error is kept until the erasure"
        await world.readback()
        assert await observed(world) == 2, "Masivo and Wix: Intempt has no read API"

        async with world.gateway.store.engine.begin() as conn:  # as versions before masking wrote it
            await conn.execute(update(delivery_attempts).values(error=f"echoed {NOTE!r}"))
        world.now += timedelta(minutes=1)
        assert await world.gateway.erasures.request("cust-5", "cli") is not None
        echo.on = False
        await world.gateway.worker.drain()
        assert await world.gateway.erasures.step()
        stored = await everything_stored(world)
        for personal in (EMAIL, quote(EMAIL), PHONE, NOTE):
            assert personal not in stored, personal
        assert await observed(world) == 0, "what providers were found to hold goes too"
    finally:
        await world.gateway.worker.stop()
        await world.control.aclose()


async def test_on_sqlite_nothing_of_the_person_is_left_in_the_files(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await upgraded(url)
    world = World(Store.from_url(url))
    try:
        await erased(world)
        files = [tmp_path / "gateway.db", tmp_path / "gateway.db-wal"]
        assert EMAIL.encode() in b"".join(path.read_bytes() for path in files if path.exists())
        assert await world.gateway.erasures.step()
        on_disk = b"".join(path.read_bytes() for path in files if path.exists())
        for personal in (EMAIL, PHONE, TCF, "signed up as"):
            assert personal.encode() not in on_disk, personal
    finally:
        await world.gateway.worker.stop()
        await world.control.aclose()
        await world.gateway.store.close()

"""Consent that ends: at ``expires_at`` the purposes a decision still holds turn denied, once,
recorded as an ``expiry`` entry and pushed to every provider like any decision."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from gateway.lifecycle.expiry import Expiries
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.store.tables import expiries
from schemas.consent import Decision
from tests.world import NOW, TCF, World


async def decide(world: World, minutes_ago: int, expires_in: timedelta | None = None, **purposes: str) -> None:
    body: dict[str, Any] = {
        "subject": {"id": "cust-9", "email": "cust-9@example.com", "phone": "+14155550199"},
        "purposes": purposes,
        "tcf_string": TCF,
        "occurred_at": world.now - timedelta(minutes=minutes_ago),
        "expires_at": None if expires_in is None else world.now + expires_in,
    }
    await world.gateway.record(Decision.model_validate(body, strict=False))
    await world.gateway.worker.drain()


async def pending_expiries(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(expiries))).scalar_one())


async def test_an_expired_grant_turns_denied_everywhere_unless_a_newer_decision_replaced_it(world: World) -> None:
    await decide(world, 30, timedelta(days=30), email_marketing="granted", sms_marketing="granted")
    await decide(world, 10, sms_marketing="granted")  # sms decided again, for good: it no longer expires
    assert await pending_expiries(world.gateway.store) == 1
    assert not await world.gateway.expiries.step(), "nothing is due yet"

    world.now = NOW + timedelta(days=31)
    assert await world.gateway.expiries.step()
    await world.gateway.worker.drain()
    assert world.gateway.metrics.registry.get_sample_value("consent_gateway_expired_purposes_total") == 1

    [expiry, *_] = await world.gateway.store.ledger.history("cust-9", 10)
    assert expiry.decision.source == "expiry" and expiry.decision.purposes == {"email_marketing": "denied"}
    assert expiry.decision.occurred_at == NOW + timedelta(days=30)  # dated when the consent ended
    state = await world.gateway.store.ledger.subject_state("cust-9")
    assert state is not None
    assert {p: r.state.value for p, r in state.purposes.items()} == {
        "email_marketing": "denied",
        "sms_marketing": "granted",
    }
    masivo = (await world.inspect("masivo"))["state"]["effective_purposes"]["cust-9"]
    assert masivo["email_marketing"] is False
    wix = {c["details"]["type"]: c["state"] for c in (await world.inspect("wix"))["state"]["consents"].values()}
    assert wix == {"EMAIL": "REVOKED", "PHONE": "CONFIRMED"}
    assert not await world.gateway.expiries.step() and await pending_expiries(world.gateway.store) == 0


async def test_a_later_decision_for_the_same_purposes_cancels_the_expiry(world: World) -> None:
    await decide(world, 30, timedelta(days=1), email_marketing="granted")
    await decide(world, 10, email_marketing="granted")
    world.now = NOW + timedelta(days=2)
    assert await world.gateway.expiries.step()  # due, but nothing of it is held any more
    history = await world.gateway.store.ledger.history("cust-9", 10)
    assert [entry.decision.source for entry in history] == ["web", "web"]


async def test_with_several_workers_each_expiry_is_applied_once(world: World, database_url: str) -> None:
    for n in range(20):
        body = {
            "subject": {"id": f"cust-{n}"},
            "purposes": {"email_marketing": "granted"},
            "occurred_at": world.now - timedelta(minutes=5),
            "expires_at": world.now + timedelta(hours=1),
        }
        await world.gateway.record(Decision.model_validate(body, strict=False))
    world.now = NOW + timedelta(hours=2)
    stores = [Store.from_url(database_url) for _ in range(3)]
    workers = [Expiries(s, world.gateway.adapters, lambda: world.now, lambda: None, Metrics()) for s in stores]
    try:
        await asyncio.gather(*(worker.step() for worker in workers))
        await asyncio.gather(*(worker.step() for worker in workers))
    finally:
        for store in stores:
            await store.close()
    sources = [
        entry.decision.source for n in range(20) for entry in await world.gateway.store.ledger.history(f"cust-{n}", 10)
    ]
    assert sources.count("expiry") == 20 and len(sources) == 40

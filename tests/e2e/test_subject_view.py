"""The subject view tells the truth: a part that cannot apply at a provider is shown as such and
never blocks the rest, and a skipped delivery never hides a dead push."""

from __future__ import annotations

import httpx

from schemas.api import DeliveryStatus, SyncStatus
from schemas.consent import Decision
from tests.e2e.conftest import ADMIN, DECISION, READER, WRITER, auth
from tests.world import NOW, TCF, World


async def test_a_wix_channel_without_an_address_is_not_applicable_and_the_other_syncs(world: World) -> None:
    decision = Decision.model_validate(
        {
            "subject": {"id": "phone-only", "phone": "+14155550123"},
            "purposes": {"email_marketing": "granted", "sms_marketing": "granted"},
            "tcf_string": TCF,
            "occurred_at": NOW,
        },
        strict=False,
    )
    recorded = await world.gateway.record(decision)
    await world.gateway.worker.drain()
    assert (await world.statuses(recorded.id))["wix"] is DeliveryStatus.succeeded
    held = [consent["details"] for consent in (await world.inspect("wix"))["state"]["consents"].values()]
    assert held == [{"type": "PHONE", "phone": "+14155550123"}]

    subject = await world.gateway.subject("phone-only")
    assert subject is not None
    [wix] = [row for row in subject.providers if row.provider == "wix"]
    assert wix.status is SyncStatus.in_sync
    assert wix.not_applicable == {"EMAIL": "the subject has no email"}
    assert list(wix.desired) == ["PHONE"]


async def test_a_skipped_delivery_never_hides_a_dead_push(client: httpx.AsyncClient) -> None:
    client.failures.append(400)  # type: ignore[attr-defined]
    first = (await client.post("/v1/consents?wait=5", json=DECISION, headers=auth(WRITER))).json()
    dead_id = first["deliveries"][0]["id"]
    unmapped = {**DECISION, "purposes": {"analytics": "granted"}, "occurred_at": "2026-11-23T11:00:00Z"}
    second = (await client.post("/v1/consents?wait=5", json=unmapped, headers=auth(WRITER))).json()
    assert [d["status"] for d in second["deliveries"]] == ["skipped"]

    [fake] = (await client.get("/v1/subjects/cust-42", headers=auth(READER))).json()["providers"]
    assert fake["status"] == "failed"
    assert fake["last_delivery"]["id"] == dead_id and fake["last_delivery"]["status"] == "dead"

    await client.post(f"/v1/deliveries/{dead_id}/replay", headers=auth(ADMIN))
    await client.gateway.wait_until_final(first["id"], 5)  # type: ignore[attr-defined]
    [fake] = (await client.get("/v1/subjects/cust-42", headers=auth(READER))).json()["providers"]
    assert fake["status"] == "unobservable" and fake["last_delivery"]["status"] == "succeeded"

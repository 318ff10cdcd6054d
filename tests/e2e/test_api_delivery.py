"""Idempotency keys, the batch endpoint, deliveries (list, detail, replay), history and metrics."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.store.tables import idempotency_keys
from schemas.consent import Decision
from tests.e2e.conftest import ADMIN, DECISION, READER, WRITER, auth, replayable, stored_rows


def key(value: str) -> dict[str, str]:
    return {**auth(WRITER), "Idempotency-Key": value}


async def test_same_key_same_body_returns_the_original_response(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/consents", json=DECISION, headers=key("k-1"))
    again = await client.post("/v1/consents", json=DECISION, headers=key("k-1"))
    assert first.status_code == again.status_code == 202
    assert replayable(again.json()) == replayable(first.json())
    assert again.headers["idempotent-replayed"] == "true"
    history = (await client.get("/v1/subjects/cust-42/history", headers=auth(READER))).json()
    assert len(history["items"]) == 1, "the retry recorded nothing"


async def test_a_keyed_batch_is_kept_as_decision_ids_and_replayed_whole(client: httpx.AsyncClient) -> None:
    decisions = [{**DECISION, "subject": {"id": f"cust-{n}", "email": f"p{n}@example.com"}} for n in range(50)]
    first = await client.post("/v1/consents:batch", json={"decisions": decisions}, headers=key("k-big"))
    again = await client.post("/v1/consents:batch", json={"decisions": decisions}, headers=key("k-big"))
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert replayable(again.json()) == replayable(first.json())
    async with client.gateway.store.engine.connect() as conn:  # type: ignore[attr-defined]
        [stored] = (await conn.execute(select(idempotency_keys.c.response_body))).scalars().all()
    assert len(json.dumps(stored)) < len(first.content) / 5, "ids, not the decisions again"
    assert "@example.com" not in json.dumps(stored)


async def test_same_key_different_body_is_a_conflict(client: httpx.AsyncClient) -> None:
    await client.post("/v1/consents", json=DECISION, headers=key("k-2"))
    other = {**DECISION, "purposes": {"email_marketing": "denied"}}
    response = await client.post("/v1/consents", json=other, headers=key("k-2"))
    assert response.status_code == 409 and response.json()["type"].endswith("idempotency-key-reused")


async def test_a_concurrent_duplicate_is_a_conflict(client: httpx.AsyncClient) -> None:
    gateway = client.gateway  # type: ignore[attr-defined]
    body = Decision.model_validate(DECISION, strict=False).model_dump_json()
    digest = hashlib.sha256(body.encode()).hexdigest()
    held = await gateway.store.keys.begin("writer", "k-3", digest, gateway.clock(), 86400, 300)
    assert held.verdict == "proceed"
    response = await client.post("/v1/consents", json=DECISION, headers=key("k-3"))
    assert response.status_code == 409 and response.json()["type"].endswith("idempotency-key-in-progress")


async def test_keys_are_per_client_and_an_invalid_request_does_not_burn_the_key(client: httpx.AsyncClient) -> None:
    bad = await client.post("/v1/consents", json={**DECISION, "purposes": {"x": "granted"}}, headers=key("k-4"))
    assert bad.status_code == 422
    good = await client.post("/v1/consents", json=DECISION, headers=key("k-4"))
    assert good.status_code == 202


async def test_batch_accepts_and_rejects_each_item_on_its_own(client: httpx.AsyncClient) -> None:
    items: list[Any] = [
        DECISION,
        {**DECISION, "subject": {"id": "cust-7", "email": "nope"}},
        {**DECISION, "subject": {"id": "cust-8"}},
    ]
    response = await client.post("/v1/consents:batch", json={"decisions": items}, headers=auth(WRITER))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["problem"]["errors"][0]["field"] == "decisions.1.subject.email"
    assert results[2]["decision"]["subject_id"] == "cust-8"
    missing = await client.get("/v1/subjects/cust-7", headers=auth(READER))
    assert missing.status_code == 404


async def test_batch_rejects_an_undecodable_tcf_string_per_item(client: httpx.AsyncClient) -> None:
    items = [
        {**DECISION, "subject": {"id": "cust-7"}, "tcf_string": "COvFyGBOvFyGBAbAAAENAPCA"},
        {**DECISION, "subject": {"id": "cust-8"}, "tcf_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"},
    ]
    response = await client.post("/v1/consents:batch", json={"decisions": items}, headers=auth(WRITER))
    assert response.status_code == 200
    rejected, accepted = response.json()["results"]
    assert (rejected["status"], accepted["status"]) == ("rejected", "accepted")
    (error,) = rejected["problem"]["errors"]
    assert error["field"] == "decisions.0.tcf_string" and "truncated" in error["message"]
    assert (await client.get("/v1/subjects/cust-7", headers=auth(READER))).status_code == 404


@pytest.mark.parametrize("decisions", [[], [DECISION] * 1001, "not a list"], ids=["empty", "1001", "not-list"])
async def test_a_batch_outside_the_limits_is_refused_whole(client: httpx.AsyncClient, decisions: Any) -> None:
    response = await client.post("/v1/consents:batch", json={"decisions": decisions}, headers=auth(WRITER))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "decisions"
    assert await stored_rows(client) == 0


async def test_a_batch_item_that_is_not_an_object_refuses_the_batch_as_the_document_says(
    client: httpx.AsyncClient,
) -> None:
    """The document's items are objects (each then a Decision on its own); a 5 is not one."""
    response = await client.post("/v1/consents:batch", json={"decisions": [DECISION, 5]}, headers=auth(WRITER))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "decisions.1"
    assert await stored_rows(client) == 0
    document = (await client.get("/openapi.json")).json()["components"]["schemas"]["BatchEnvelope"]
    assert document["properties"]["decisions"]["items"]["type"] == "object"


async def test_batch_is_idempotent_too(client: httpx.AsyncClient) -> None:
    body = {"decisions": [DECISION]}
    first = await client.post("/v1/consents:batch", json=body, headers=key("b-1"))
    again = await client.post("/v1/consents:batch", json=body, headers=key("b-1"))
    assert replayable(again.json()) == replayable(first.json())


async def test_deliveries_are_listed_filtered_and_paginated_for_admins(client: httpx.AsyncClient) -> None:
    for index in range(5):
        subject = {"id": f"cust-{index}"}
        await client.post("/v1/consents?wait=5", json={**DECISION, "subject": subject}, headers=auth(WRITER))
    assert (await client.get("/v1/deliveries", headers=auth(READER))).status_code == 403

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "provider": "fake", "status": "succeeded", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/deliveries", params=params, headers=auth(ADMIN))).json()
        seen += [item["subject_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"cust-{i}" for i in reversed(range(5))]
    one = (await client.get("/v1/deliveries", params={"subject": "cust-3"}, headers=auth(ADMIN))).json()
    assert [item["subject_id"] for item in one["items"]] == ["cust-3"]
    bad = await client.get("/v1/deliveries", params={"status": "lost", "limit": "0"}, headers=auth(ADMIN))
    assert bad.status_code == 400 and {e["field"] for e in bad.json()["errors"]} == {"status", "limit"}


async def test_a_dead_delivery_shows_its_attempts_and_replays_to_success(client: httpx.AsyncClient) -> None:
    client.failures.append(400)  # type: ignore[attr-defined]
    created = (await client.post("/v1/consents?wait=5", json=DECISION, headers=auth(WRITER))).json()
    delivery_id = created["deliveries"][0]["id"]
    dead = (await client.get(f"/v1/deliveries/{delivery_id}", headers=auth(ADMIN))).json()
    assert dead["status"] == "dead" and "refused by the fake provider" in dead["last_error"]
    assert [(a["outcome"], a["status_code"]) for a in dead["attempt_log"]] == [("permanent", 400)]

    replay = await client.post(f"/v1/deliveries/{delivery_id}/replay", headers=auth(ADMIN))
    assert replay.status_code == 202
    await client.gateway.wait_until_final(created["id"], 5)  # type: ignore[attr-defined]
    done = (await client.get(f"/v1/deliveries/{delivery_id}", headers=auth(ADMIN))).json()
    assert done["status"] == "succeeded" and [a["outcome"] for a in done["attempt_log"]] == ["permanent", "succeeded"]
    again = await client.post(f"/v1/deliveries/{delivery_id}/replay", headers=auth(ADMIN))
    assert again.status_code == 409


async def test_history_is_newest_first(client: httpx.AsyncClient) -> None:
    await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))
    later = {**DECISION, "purposes": {"email_marketing": "denied"}, "occurred_at": "2026-11-23T11:00:00Z"}
    await client.post("/v1/consents", json=later, headers=auth(WRITER))
    items = (await client.get("/v1/subjects/cust-42/history", headers=auth(READER))).json()["items"]
    assert [item["decision"]["purposes"] for item in items] == [later["purposes"], DECISION["purposes"]]


async def test_metrics_count_deliveries_by_provider_and_outcome(client: httpx.AsyncClient) -> None:
    client.failures.append(503)  # type: ignore[attr-defined]
    await client.post("/v1/consents?wait=5", json=DECISION, headers=auth(WRITER))
    text = (await client.get("/metrics")).text
    assert 'consent_gateway_retries_total{kind="in_process",provider="fake"} 1.0' in text
    assert 'consent_gateway_attempts_total{outcome="transient",provider="fake"} 1.0' in text
    assert 'consent_gateway_deliveries_total{outcome="succeeded",provider="fake"} 1.0' in text
    assert 'consent_gateway_queue_depth{provider="fake"} 0.0' in text
    assert "consent_gateway_attempt_seconds_bucket" in text


async def test_metrics_count_a_batchs_decisions_by_outcome(client: httpx.AsyncClient) -> None:
    """Each item counts once, as it would alone: recorded, superseded by a newer decision, or refused
    (invalid, or its subject erased)."""
    await client.post("/v1/consents", json=DECISION | {"subject": {"id": "erased"}}, headers=auth(WRITER))
    assert (await client.delete("/v1/subjects/erased", headers=auth(ADMIN))).status_code == 202
    await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))
    items = [
        DECISION | {"subject": {"id": "cust-43"}},
        DECISION | {"occurred_at": "2026-11-23T09:00:00Z"},  # older than cust-42's: superseded
        DECISION | {"subject": {"id": "erased"}},
        {"subject": {}},
    ]
    answer = await client.post("/v1/consents:batch", json={"decisions": items}, headers=auth(WRITER))
    assert [item["status"] for item in answer.json()["results"]] == ["accepted", "accepted", "rejected", "rejected"]
    text = (await client.get("/metrics")).text
    for outcome, count in (("accepted", 3), ("superseded", 1), ("rejected", 2)):
        assert f'consent_gateway_decisions_total{{outcome="{outcome}"}} {count}.0' in text


async def test_metrics_count_requests_by_route_template_and_decisions_by_outcome(client: httpx.AsyncClient) -> None:
    accepted = await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))
    older = DECISION | {"occurred_at": "2026-11-23T09:00:00Z"}  # every purpose holds a newer decision
    assert (await client.post("/v1/consents", json=older, headers=auth(WRITER))).json()["effective_purposes"] == []
    assert (await client.post("/v1/consents", json={"subject": {}}, headers=auth(WRITER))).status_code == 422
    decision_id = accepted.json()["id"]
    assert (await client.get(f"/v1/consents/{decision_id}", headers=auth(READER))).status_code == 200
    text = (await client.get("/metrics")).text
    for outcome in ("accepted", "superseded", "rejected"):
        assert f'consent_gateway_decisions_total{{outcome="{outcome}"}} 1.0' in text
    assert 'consent_gateway_http_requests_total{method="POST",route="/v1/consents",status="202"} 2.0' in text
    assert 'consent_gateway_http_requests_total{method="POST",route="/v1/consents",status="422"} 1.0' in text
    assert (
        'consent_gateway_http_requests_total{method="GET",route="/v1/consents/{decision_id}",status="200"} 1.0' in text
    )
    assert 'consent_gateway_http_request_seconds_count{method="POST",route="/v1/consents"} 3.0' in text
    assert decision_id not in text and "cust-42" not in text and "ana@example.com" not in text


async def test_every_decision_outcome_is_a_series_from_the_start(client: httpx.AsyncClient) -> None:
    """At 0 before anything is refused or superseded, so a rate or an alert on them has a series to read."""
    assert (await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))).status_code == 202
    text = (await client.get("/metrics")).text
    assert 'consent_gateway_decisions_total{outcome="accepted"} 1.0' in text
    for outcome in ("superseded", "rejected"):
        assert f'consent_gateway_decisions_total{{outcome="{outcome}"}} 0.0' in text

"""A keyed request that failed after recording: a retry with the same body answers the decision it
recorded at once, and the key is never answered with that decision for a different body (409)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.store import Store
from gateway.store.idempotency import IdempotencyKeys, Verdict
from tests.e2e.conftest import DECISION, READER, WRITER, auth

OTHER = {**DECISION, "purposes": {"email_marketing": "denied"}}
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def with_key(key: str) -> dict[str, str]:
    return {**auth(WRITER), "Idempotency-Key": key}


async def decisions_of(client: httpx.AsyncClient, subject: str = "cust-42") -> list[str]:
    """The ids of the subject's recorded decisions, newest first."""
    history = await client.get(f"/v1/subjects/{subject}/history", headers=auth(READER))
    return [item["id"] for item in history.json()["items"]] if history.status_code == 200 else []


async def fail_after_recording(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """POST ``DECISION`` with ``key``; it is recorded, then the wait for its deliveries breaks."""

    async def broken_wait(*_args: Any) -> Any:
        raise RuntimeError("lost while waiting")

    with monkeypatch.context() as patched:
        patched.setattr(client.gateway, "wait_until_final", broken_wait)  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="lost while waiting"):  # the in-process transport re-raises
            await client.post("/v1/consents?wait=1", json=DECISION, headers=with_key(key))


async def test_a_different_body_right_after_a_failure_that_recorded_is_a_conflict(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fail_after_recording(client, monkeypatch, "k-failed")
    [recorded] = await decisions_of(client)

    reused = await client.post("/v1/consents", json=OTHER, headers=with_key("k-failed"))
    assert reused.status_code == 409, reused.text
    assert reused.json()["type"].endswith("idempotency-key-reused")
    assert await decisions_of(client) == [recorded], "nothing recorded, nothing answered for the other body"

    retried = await client.post("/v1/consents", json=DECISION, headers=with_key("k-failed"))
    assert retried.status_code == 202 and retried.json()["id"] == recorded
    assert len(await decisions_of(client)) == 1


async def test_a_different_batch_right_after_a_batch_failed_after_recording_is_a_conflict(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = client.gateway.store.ledger  # type: ignore[attr-defined]
    record_many = ledger.record_many

    async def failing_for_the_second(items: list[Any], *args: Any) -> Any:
        """The batch's group fails; written one by one (the group commit's fallback), only the second does."""
        if any(item.decision.subject.id == "cust-43" for item in items):
            raise RuntimeError("the store went away")
        return await record_many(items, *args)

    first = {"decisions": [DECISION, {**DECISION, "subject": {"id": "cust-43"}}]}
    with monkeypatch.context() as patched:
        patched.setattr(ledger, "record_many", failing_for_the_second)
        with pytest.raises(RuntimeError, match="the store went away"):
            await client.post("/v1/consents:batch", json=first, headers=with_key("b-failed"))
    recorded = await decisions_of(client)
    assert len(recorded) + len(await decisions_of(client, "cust-43")) == 1, "one item recorded before the failure"

    other = {"decisions": [OTHER, {**OTHER, "subject": {"id": "cust-43"}}]}
    reused = await client.post("/v1/consents:batch", json=other, headers=with_key("b-failed"))
    assert reused.status_code == 409 and reused.json()["type"].endswith("idempotency-key-reused"), reused.text
    assert await decisions_of(client) == recorded and len(await decisions_of(client, "cust-43")) + len(recorded) == 1


async def test_a_key_released_before_it_recorded_anything_is_free_for_any_body(store: Store) -> None:
    keys = IdempotencyKeys(store.engine)
    taken = await keys.begin("writer", "k-1", "hash-a", NOW, 86400, 300)
    assert taken.verdict is Verdict.proceed
    await keys.release("writer", "k-1")  # nothing bound: forgotten, any body may use it
    assert (await keys.begin("writer", "k-1", "hash-b", NOW, 86400, 300)).verdict is Verdict.proceed

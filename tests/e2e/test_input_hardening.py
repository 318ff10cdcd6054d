"""What a new user and an attacker sent: every bad input is a 4xx problem naming the field, and
nothing is stored; a retried request never records anything twice, whatever failed in between."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.store.idempotency import Binding
from schemas.consent import Decision
from tests.e2e.conftest import ADMIN, DECISION, READER, WRITER, auth, replayable, stored_rows

FAR_FUTURE = "9999-12-31T23:59:59Z"
OVERFLOWS = ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00")


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def with_key(token: str, value: str) -> dict[str, str]:
    return {**auth(token), "Idempotency-Key": value}


async def post_raw(client: httpx.AsyncClient, content: str, path: str = "/v1/consents") -> httpx.Response:
    headers = auth(WRITER) | {"Content-Type": "application/json"}
    return await client.post(path, content=content, headers=headers)


def fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [error["field"] for error in response.json()["errors"]]


async def decision_count(client: httpx.AsyncClient, subject: str = "cust-42") -> int:
    history = await client.get(f"/v1/subjects/{subject}/history", headers=auth(READER))
    return len(history.json()["items"]) if history.status_code == 200 else 0


# -- 1. a future occurred_at must not poison the subject -------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [FAR_FUTURE, "ten minutes ahead", "1999-12-31T23:59:59Z", "1700000000", "2026-11-23"],
    ids=["far-future", "ten-minutes-ahead", "before-2000", "numeric-string", "date-only"],
)
async def test_an_implausible_occurred_at_is_refused(client: httpx.AsyncClient, occurred_at: str) -> None:
    if occurred_at == "ten minutes ahead":  # of the clock when the request is made, not when tests were collected
        occurred_at = at(datetime.now(UTC) + timedelta(minutes=10))
    response = await client.post("/v1/consents", json={**DECISION, "occurred_at": occurred_at}, headers=auth(WRITER))
    assert response.status_code == 422 and fields(response) == ["occurred_at"]
    assert await stored_rows(client) == 0


async def test_a_decision_within_the_clock_skew_is_accepted_and_a_later_opt_out_wins(
    client: httpx.AsyncClient,
) -> None:
    ahead = {**DECISION, "occurred_at": at(datetime.now(UTC) + timedelta(minutes=4))}
    assert (await client.post("/v1/consents", json=ahead, headers=auth(WRITER))).status_code == 202
    later = at(datetime.now(UTC) + timedelta(minutes=4, seconds=30))
    opt_out = {**DECISION, "purposes": {"email_marketing": "denied"}, "occurred_at": later}
    recorded = await client.post("/v1/consents", json=opt_out, headers=auth(WRITER))
    assert recorded.json()["effective_purposes"] == ["email_marketing"]


# -- 3. dates that overflow, and odd numbers -------------------------------------------------------


@pytest.mark.parametrize("moment", OVERFLOWS)
@pytest.mark.parametrize("field", ["occurred_at", "expires_at"])
async def test_a_time_that_leaves_the_calendar_in_utc_is_a_problem(
    client: httpx.AsyncClient, field: str, moment: str
) -> None:
    response = await client.post("/v1/consents", json={**DECISION, field: moment}, headers=auth(WRITER))
    assert response.status_code == 422 and field in fields(response)
    assert await stored_rows(client) == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        *[({"since": moment}, "since") for moment in OVERFLOWS],
        ({"since": "0.5"}, "since"),
        ({"since": "1700000000"}, "since"),
        *[
            ({"cursor": base64.urlsafe_b64encode(f"{moment}|x".encode()).decode()}, "cursor")
            for moment in (*OVERFLOWS, "0.5")
        ],
        ({"cursor": "%%%"}, "cursor"),
        ({"provider": "bogus"}, "provider"),
        ({"limit": "1_0"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"shoe_size": "43"}, "shoe_size"),
    ],
)
async def test_bad_delivery_filters_are_a_400_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/deliveries", params=params, headers=auth(ADMIN))
    assert response.status_code == 400 and fields(response) == [field]


@pytest.mark.parametrize("limit", ["²", "1_0", "-1", "0", "201", "1.0", " 5"])
async def test_a_bad_history_limit_is_a_400(client: httpx.AsyncClient, limit: str) -> None:
    await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))
    response = await client.get("/v1/subjects/cust-42/history", params={"limit": limit}, headers=auth(READER))
    assert response.status_code == 400 and fields(response) == ["limit"]


@pytest.mark.parametrize("wait", ["1_0", "ten", "-1", "61", "nan", "inf", "1e1", "060", "00.5", "60.5", "1."])
async def test_a_bad_wait_is_a_400_and_stores_nothing(client: httpx.AsyncClient, wait: str) -> None:
    response = await client.post(f"/v1/consents?wait={wait}", json=DECISION, headers=auth(WRITER))
    assert response.status_code == 400 and fields(response) == ["wait"]
    assert await stored_rows(client) == 0


@pytest.mark.parametrize(
    "path", ["/v1/consents/%00", "/v1/subjects/a%00b", "/v1/subjects/a%00b/history", "/v1/deliveries/%00"]
)
async def test_an_id_that_cannot_exist_is_a_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=auth(ADMIN))
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


# -- 4. lax parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (json.dumps({**DECISION, "subject": {"id": "c", "phone": "+14155550199\n"}}), "subject.phone"),
        (
            '{"subject": {"id": "a", "id": "b"}, "purposes": {"email_marketing": "granted"},'
            ' "occurred_at": "2026-11-23T10:00:00Z"}',
            "subject.id",
        ),
        (
            '{"subject": {"id": "a"}, "purposes": {"email_marketing": "granted", "email_marketing": "denied"},'
            ' "occurred_at": "2026-11-23T10:00:00Z"}',
            "purposes.email_marketing",
        ),
        (json.dumps({**DECISION, "note": "a\u0000b"}), "note"),
        (json.dumps({**DECISION, "note": "bell\u0007"}), "note"),
        (json.dumps({**DECISION, "vendors": {"me\nta": True}}), "vendors.me\nta.[key]"),
        (json.dumps({**DECISION, "tcf_string": "CO\u0000"}), "tcf_string"),
        (json.dumps({**DECISION, "source": "app"}), "source"),
        ("[1, 2", "body"),
    ],
    ids=["phone-newline", "dup-subject-id", "dup-purpose", "nul-note", "bell-note", "vendor-newline", "nul-tcf"]
    + ["unknown-source", "not-json"],
)
async def test_lax_input_is_refused(client: httpx.AsyncClient, content: str, field: str) -> None:
    response = await post_raw(client, content)
    assert response.status_code == 422 and field in fields(response), response.text
    assert await stored_rows(client) == 0


DEEP = {  # past Python's recursion limit, inside the test app's 4 KiB body limit
    "array": "[" * 4_000,
    "vendors": json.dumps({**DECISION, "vendors": "@"}).replace('"@"', "[" * 1_500 + "]" * 1_500),
    "note": json.dumps({**DECISION, "note": "@"}).replace('"@"', '{"a":' * 600 + "1" + "}" * 600),
}


@pytest.mark.parametrize("content", DEEP.values(), ids=DEEP.keys())
@pytest.mark.parametrize(
    "path", ["/v1/consents", "/v1/consents:batch", "/v1/reconciliation/runs", "/v1/subjects/cust-42/repush"]
)
async def test_json_nested_too_deep_is_a_422_naming_body(client: httpx.AsyncClient, path: str, content: str) -> None:
    headers = auth(ADMIN if "consents" not in path else WRITER) | {"Content-Type": "application/json"}
    response = await client.post(path, content=content, headers=headers)
    assert response.status_code == 422 and fields(response) == ["body"], response.text
    assert "deep" in response.json()["detail"]
    assert await stored_rows(client) == 0


async def test_a_note_may_span_lines(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/consents", json={**DECISION, "note": "line 1\n\tline 2"}, headers=auth(WRITER))
    assert response.status_code == 202


async def test_a_source_error_lists_the_allowed_values(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/consents", json={**DECISION, "source": "app"}, headers=auth(WRITER))
    assert "web, mobile, in_person, form, import, provider:<name>" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
    ids=["text-plain", "form", "none"],
)
@pytest.mark.parametrize("path", ["/v1/consents", "/v1/consents:batch"])
async def test_a_body_not_declared_as_json_is_a_415(
    client: httpx.AsyncClient, headers: dict[str, str], path: str
) -> None:
    body = json.dumps(DECISION if path == "/v1/consents" else {"decisions": [DECISION]})
    response = await client.post(path, content=body, headers=auth(WRITER) | headers)
    assert response.status_code == 415 and fields(response) == ["Content-Type"]
    assert await stored_rows(client) == 0


async def test_json_with_a_charset_is_json(client: httpx.AsyncClient) -> None:
    headers = auth(WRITER) | {"Content-Type": "application/json; charset=utf-8"}
    assert (await client.post("/v1/consents", content=json.dumps(DECISION), headers=headers)).status_code == 202


# -- 2. a batch is never cut in two, and never recorded twice ---------------------------------------


def batch_of(*decisions: Any) -> dict[str, Any]:
    return {"decisions": list(decisions)}


def good(subject: str) -> dict[str, Any]:
    return {**DECISION, "subject": {"id": subject}}


async def test_a_batch_with_an_overflowing_date_rejects_that_item_only(client: httpx.AsyncClient) -> None:
    items = [good("good-1"), good("good-2"), {**good("bad"), "occurred_at": OVERFLOWS[0]}, good("good-3")]
    response = await client.post("/v1/consents:batch", json=batch_of(*items), headers=with_key(WRITER, "b-1"))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted", "rejected", "accepted"]
    assert [e["field"] for e in results[2]["problem"]["errors"]] == ["decisions.2.occurred_at"]
    again = await client.post("/v1/consents:batch", json=batch_of(*items), headers=with_key(WRITER, "b-1"))
    assert replayable(again.json()) == replayable(response.json())
    assert [await decision_count(client, s) for s in ("good-1", "good-2", "bad", "good-3")] == [1, 1, 0, 1]


async def test_a_batch_item_with_a_repeated_key_is_rejected_on_its_own(client: httpx.AsyncClient) -> None:
    item = '{"subject": {"id": "a", "id": "b"}, "purposes": {"email_marketing": "granted"}, "occurred_at": "%s"}'
    content = f'{{"decisions": [{json.dumps(good("good-1"))}, {item % DECISION["occurred_at"]}]}}'
    response = await post_raw(client, content, "/v1/consents:batch")
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert [e["field"] for e in results[1]["problem"]["errors"]] == ["decisions.1.subject.id"]


async def test_a_repeated_envelope_key_refuses_the_batch(client: httpx.AsyncClient) -> None:
    one = json.dumps([good("good-1")])
    response = await post_raw(client, f'{{"decisions": {one}, "decisions": {one}}}', "/v1/consents:batch")
    assert response.status_code == 422 and fields(response) == ["decisions"]
    assert await stored_rows(client) == 0


async def test_a_batch_that_fails_midway_records_no_item_twice_on_retry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = client.gateway.store.ledger  # type: ignore[attr-defined]
    record_many = ledger.record_many

    async def failing_for_the_third(items: list[Any], *args: Any) -> Any:
        """The batch's group fails; written one by one (the group commit's fallback), only the third does."""
        if any(item.decision.subject.id == "good-3" for item in items):
            raise RuntimeError("the store went away")
        return await record_many(items, *args)

    monkeypatch.setattr(ledger, "record_many", failing_for_the_third)
    items = batch_of(good("good-1"), good("good-2"), good("good-3"), good("good-4"))
    with pytest.raises(RuntimeError, match="the store went away"):  # the in-process transport re-raises
        await client.post("/v1/consents:batch", json=items, headers=with_key(WRITER, "b-2"))
    assert [await decision_count(client, f"good-{i}") for i in range(1, 5)] == [1, 1, 0, 1]
    monkeypatch.undo()
    retried = await client.post("/v1/consents:batch", json=items, headers=with_key(WRITER, "b-2"))
    assert [r["status"] for r in retried.json()["results"]] == ["accepted"] * 4
    assert [await decision_count(client, f"good-{i}") for i in range(1, 5)] == [1, 1, 1, 1]


# -- 11. a key's outcome is bound to its decision ----------------------------------------------------


async def test_a_failure_after_recording_keeps_the_key_bound_to_the_decision(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = client.gateway  # type: ignore[attr-defined]

    async def broken_wait(*_args: Any) -> Any:
        raise RuntimeError("lost while waiting")

    monkeypatch.setattr(gateway, "wait_until_final", broken_wait)
    with pytest.raises(RuntimeError, match="lost while waiting"):  # the in-process transport re-raises
        await client.post("/v1/consents?wait=1", json=DECISION, headers=with_key(WRITER, "k-bound"))
    monkeypatch.undo()
    retried = await client.post("/v1/consents?wait=1", json=DECISION, headers=with_key(WRITER, "k-bound"))
    assert retried.status_code in (200, 202)
    assert await decision_count(client) == 1, "the retry answered the decision already recorded"
    other = {**DECISION, "purposes": {"email_marketing": "denied"}}
    reused = await client.post("/v1/consents", json=other, headers=with_key(WRITER, "k-bound"))
    assert reused.status_code == 409, "a key bound to a decision is never reused for another body"


async def test_a_crash_then_a_stale_takeover_answers_the_recorded_decision(client: httpx.AsyncClient) -> None:
    gateway = client.gateway  # type: ignore[attr-defined]
    decision = Decision.model_validate(DECISION, strict=False)
    digest = hashlib.sha256(decision.model_dump_json().encode()).hexdigest()
    now = datetime.now(UTC)
    gateway.clock = lambda: now
    held = await gateway.store.keys.begin("writer", "k-crash", digest, now, 86400, 300)
    expires_at = held.expires_at
    recorded = await gateway.record(decision, Binding("writer", "k-crash", 0, expires_at))  # then the process died

    gateway.clock = lambda: now + timedelta(seconds=299)
    early = await client.post("/v1/consents", json=DECISION, headers=with_key(WRITER, "k-crash"))
    assert early.status_code == 409 and early.json()["type"].endswith("idempotency-key-in-progress")
    gateway.clock = lambda: now + timedelta(seconds=301)
    taken_over = await client.post("/v1/consents", json=DECISION, headers=with_key(WRITER, "k-crash"))
    assert taken_over.status_code == 202 and taken_over.json()["id"] == recorded.id
    assert await decision_count(client) == 1


async def test_keys_are_per_client_token(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/consents", json=DECISION, headers=with_key(WRITER, "k-shared"))
    second = await client.post("/v1/consents", json=DECISION, headers=with_key(ADMIN, "k-shared"))
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"] and "idempotent-replayed" not in second.headers
    assert await decision_count(client) == 2


@pytest.mark.parametrize("wait", ["0", "0.5", "10", "59.999", "60", "60.000"])
async def test_a_wait_written_as_documented_is_taken(client: httpx.AsyncClient, wait: str) -> None:
    response = await client.post(f"/v1/consents?wait={wait}", json=DECISION, headers=auth(WRITER))
    assert response.status_code in (200, 202), response.text


@pytest.mark.parametrize("path", ["/v1/reconciliation/runs", "/v1/subjects/cust-42/repush"])
async def test_a_body_of_whitespace_is_not_an_empty_body(client: httpx.AsyncClient, path: str) -> None:
    headers = auth(ADMIN) | {"Content-Type": "application/json"}
    response = await client.post(path, content="\n", headers=headers)
    assert response.status_code == 422 and fields(response) == ["body"], response.text

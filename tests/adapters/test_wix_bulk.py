"""The Wix adapter's bulk first syncs (``push_many``), against canned answers and against the Wix simulator."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.base import Ack, Bulk, drive, item_writes_of, sender
from adapters.errors import LocalValidationError, PermanentError, ProviderError, TransientError
from adapters.simulators.wix import create_app
from adapters.wix import BULK_UPSERT, WixAdapter, WixSettings
from schemas.consent import FormerAddress, PurposeRecord, PurposeState, SubjectState
from tests.adapters.canned import Canned, run

BASE = "https://www.wixapis.com"
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CONFIRMATION = {"source": "FORM", "updatedDate": "2024-05-01T12:00:00Z", "optInLevel": "SINGLE_CONFIRMATION"}
Results = list[Ack | ProviderError]


def wix(**settings: Any) -> WixAdapter:
    values = {"bulk_size": 100} | settings
    return WixAdapter(WixSettings(api_key=SecretStr("IST.wix-key-0123456789"), site_id="site-1", **values))


def subject(name: str, phone: str | None = None, **purposes: str) -> SubjectState:
    records = {
        purpose: PurposeRecord(state=PurposeState(state), occurred_at=WHEN) for purpose, state in purposes.items()
    }
    email = f"{name}@example.com"
    return SubjectState(subject_id=name, email=email, phone=phone, purposes=records, source="web", occurred_at=WHEN)


def consent(index: int, email: str, consent_id: str) -> dict[str, Any]:
    """One bulk result as Wix answers it."""
    stored = {"id": consent_id, "revision": "1", "details": {"type": "EMAIL", "email": email}, "state": "CONFIRMED"}
    return {"originalIndex": index, "marketingConsent": stored}


def failure(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"originalIndex": index, "error": body}


def bulk_answer(*results: dict[str, Any]) -> httpx.Response:
    failed = sum("error" in result for result in results)
    metadata = {"totalSuccess": len(results) - failed, "totalFailure": failed}
    return httpx.Response(200, json={"results": list(results), "metadata": metadata})


def refusal(field: str, description: str) -> dict[str, Any]:
    violation = {"field": field, "description": description, "violatedRule": "OTHER"}
    return {"message": "invalid", "details": {"validationError": {"fieldViolations": [violation]}}}


def application(code: str) -> dict[str, Any]:
    return {"message": "no", "details": {"applicationError": {"code": code, "description": f"{code} here"}}}


def test_wix_is_bulk_with_a_bounded_setting() -> None:
    adapter = wix()
    assert isinstance(adapter, Bulk) and adapter.bulk_size == 100
    assert wix(bulk_size=7).bulk_size == 7
    assert WixSettings(api_key=SecretStr("k"), site_id="s").bulk_size == 100, "a conservative default"
    assert WixSettings(api_key=SecretStr("k"), site_id="s", bulk_size=0).bulk_size == 0, "0: off"
    for wrong in (-1, 1001):
        with pytest.raises(ValueError, match="bulk_size"):
            wix(bulk_size=wrong)


def test_first_sync_is_nothing_known_at_wix() -> None:
    adapter, ana = wix(), subject("ana", email_marketing="granted")
    assert adapter.first_sync(ana, {}, {})
    assert adapter.first_sync(ana, {}, {"withdrawn": []}), "no consent id remembered"
    assert not adapter.first_sync(ana, {}, {"EMAIL": {"id": "c1", "revision": "2"}}), "a known consent: PATCH"
    assert not adapter.first_sync(ana, {"EMAIL": {"state": "CONFIRMED", "email": "ana@example.com"}}, {})
    moved = ana.model_copy(update={"former": {"email": [FormerAddress(address="old@example.com", replaced_at=WHEN)]}})
    assert not adapter.first_sync(moved, {}, {}), "a former address to withdraw: the single push does it"


async def test_one_request_carries_every_channel_as_the_single_upsert_bodies() -> None:
    adapter = wix()
    states = [subject("ana", email_marketing="granted"), subject("bo", "+14155550100", sms_marketing="denied")]
    flow = adapter.push_many(states)
    request = next(flow)
    assert (request.method, request.url.path) == ("POST", BULK_UPSERT)
    assert item_writes_of(request) == {
        0: {"EMAIL": (PurposeState.granted, WHEN)},
        1: {"PHONE": (PurposeState.denied, WHEN)},
    }, "each subject's own writes, by its index"
    info = httpx.Response(200, content=request.content).json()["info"]
    assert info[0] == {  # the body a single upsert sends
        "details": {"type": "EMAIL", "email": "ana@example.com"},
        "state": "CONFIRMED",
        "lastConfirmationActivity": CONFIRMATION,
    }
    assert info[1]["details"] == {"type": "PHONE", "phone": "+14155550100"} and info[1]["state"] == "REVOKED"
    phone = {"id": "p1", "revision": "4", "details": {"type": "PHONE", "phone": "+14155550100"}, "state": "REVOKED"}
    answer = bulk_answer({"originalIndex": 1, "marketingConsent": phone}, consent(0, "ana@example.com", "e1"))
    with pytest.raises(StopIteration) as done:
        flow.send(answer)
    results: Results = done.value.value
    assert results == [
        Ack(acknowledged=adapter.project(states[0]), memo={"EMAIL": {"id": "e1", "revision": "1"}}),
        Ack(acknowledged=adapter.project(states[1]), memo={"PHONE": {"id": "p1", "revision": "4"}}),
    ], "results mapped back by originalIndex, whatever their order"


async def test_items_go_in_chunks_of_bulk_size() -> None:
    adapter = wix(bulk_size=2)
    states = [subject(name, email_marketing="granted") for name in ("a", "b", "c")]
    canned = Canned(
        bulk_answer(consent(0, "a@example.com", "1"), consent(1, "b@example.com", "2")),
        bulk_answer(consent(0, "c@example.com", "3")),
    )
    results = await run(adapter, adapter.push_many(states), canned, BASE)
    assert canned.calls == [("POST", BULK_UPSERT)] * 2
    assert [len(body["info"]) for body in canned.bodies()] == [2, 1]
    assert [result.memo["EMAIL"]["id"] for result in results if isinstance(result, Ack)] == ["1", "2", "3"]


async def test_each_subject_gets_its_own_error_and_one_failed_item_fails_its_subject() -> None:
    adapter = wix()
    states = [
        subject("ok", email_marketing="granted"),
        subject("refused", email_marketing="granted"),
        subject("busy", email_marketing="granted"),
        subject("half", "+14155550100", email_marketing="granted", sms_marketing="granted"),
        subject("silent", email_marketing="granted"),
        subject("denied", email_marketing="granted"),
    ]
    canned = Canned(
        bulk_answer(
            consent(0, "ok@example.com", "c0"),
            failure(1, refusal("marketingConsent.details.email", "is refused")),
            failure(2, application("RESOURCE_EXHAUSTED")),
            consent(3, "half@example.com", "c3"),
            failure(4, application("UNAVAILABLE")),
            failure(6, application("PERMISSION_DENIED")),
        )
    )  # originalIndex 5 (silent's email) is missing from the answer
    ok, refused, busy, half, silent, denied = await run(adapter, adapter.push_many(states), canned, BASE)
    assert isinstance(ok, Ack) and ok.memo == {"EMAIL": {"id": "c0", "revision": "1"}}
    assert type(refused) is PermanentError and "marketingConsent.details.email: is refused" in str(refused)
    assert type(busy) is TransientError and "RESOURCE_EXHAUSTED" in str(busy)
    assert type(half) is TransientError and "UNAVAILABLE" in str(half), "its PHONE item failed: the subject fails"
    assert type(silent) is TransientError and "answered nothing" in str(silent)
    assert type(denied) is PermanentError and "PERMISSION_DENIED: PERMISSION_DENIED here" in str(denied)


async def test_a_body_our_rules_refuse_stops_only_its_subject() -> None:
    adapter = wix()
    states = [subject("bad", "5550100", sms_marketing="granted"), subject("good", email_marketing="granted")]
    canned = Canned(bulk_answer(consent(0, "good@example.com", "g1")))
    bad, good = await run(adapter, adapter.push_many(states), canned, BASE)
    assert type(bad) is LocalValidationError and "E.164" in str(bad)
    assert isinstance(good, Ack) and len(canned.bodies()[0]["info"]) == 1


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (httpx.Response(400, json=refusal("info", "must have at most 100 items")), "failed whole: invalid; info"),
        (httpx.Response(200, json={"results": "nope"}), "failed whole: unexpected answer"),
        (httpx.Response(503), "Service Unavailable"),
    ],
)
async def test_a_call_failed_whole_fails_each_subject_transiently(answer: httpx.Response, text: str) -> None:
    adapter = wix()
    states = [subject("a", email_marketing="granted"), subject("b", email_marketing="granted")]
    results = await run(adapter, adapter.push_many(states), Canned(answer), BASE)
    assert all(type(result) is TransientError and text in str(result) for result in results), results


async def test_a_request_failed_after_the_workers_retries_is_thrown_in_and_the_next_chunk_still_goes() -> None:
    adapter = wix(bulk_size=1)
    states = [subject("a", email_marketing="granted"), subject("b", email_marketing="granted")]
    sent: list[httpx.Request] = []

    async def send(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) == 1:
            raise TransientError("wix", "no answer within 10 s")
        return bulk_answer(consent(0, "b@example.com", "b1"))

    flow: Generator[httpx.Request, httpx.Response, Results] = adapter.push_many(states)
    first, second = await drive(flow, send)
    assert len(sent) == 2
    assert type(first) is TransientError and "no answer" in str(first)
    assert isinstance(second, Ack) and second.memo["EMAIL"]["id"] == "b1"


async def test_against_the_simulator_one_refused_address_fails_alone() -> None:
    adapter = wix()
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, auth=adapter.auth()) as client:
        await client.post("/_faults", json={"refused_addresses": ["b@example.com"]})
        states = [subject(name, email_marketing="granted") for name in ("a", "b", "c")]
        a, b, c = await drive(adapter.push_many(states), sender(client))
        inspected = (await client.get("/_inspect")).json()
    assert [(entry["method"], entry["path"]) for entry in inspected["requests"]] == [("POST", BULK_UPSERT)]
    assert isinstance(a, Ack) and isinstance(c, Ack)
    assert type(b) is PermanentError and "is refused for this site (simulated fault)" in str(b)
    held = {item["details"]["email"]: item["id"] for item in inspected["state"]["consents"].values()}
    assert a.memo["EMAIL"]["id"] == held["a@example.com"] and "b@example.com" not in held

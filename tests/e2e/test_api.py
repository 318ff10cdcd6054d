"""The HTTP API in-process: auth, problem details, nothing stored on bad input, ?wait."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN, DECISION, READER, WRITER, auth, stored_rows


async def test_post_then_read_back(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/consents?wait=5", json=DECISION, headers=auth(WRITER))
    assert created.status_code == 200, created.text
    body = created.json()
    assert [(d["provider"], d["status"]) for d in body["deliveries"]] == [("fake", "succeeded")]
    assert created.headers["location"] == f"/v1/consents/{body['id']}"

    read = await client.get(f"/v1/consents/{body['id']}", headers=auth(READER))
    assert read.status_code == 200 and read.json()["decision"]["purposes"] == DECISION["purposes"]
    subject = (await client.get("/v1/subjects/cust-42", headers=auth(READER))).json()
    assert subject["state"]["purposes"]["sms_marketing"]["state"] == "denied"
    assert subject["providers"][0]["status"] == "unobservable"  # the fake provider cannot be read back


async def test_without_wait_the_answer_is_202(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))
    assert created.status_code == 202
    assert created.json()["deliveries"][0]["status"] in {"pending", "sending", "succeeded"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (auth("wrong-token-abcdefgh"), 401), ({"Authorization": "Basic abc"}, 401), (auth(READER), 403)],
    ids=["none", "wrong", "not-bearer", "read-scope-only"],
)
async def test_writes_need_a_valid_token_with_scope(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/v1/consents", json=DECISION, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert await stored_rows(client) == 0


async def test_reads_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/subjects/cust-42")).status_code == 401
    assert (await client.get("/v1/consents/nope", headers=auth(READER))).status_code == 404


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in DECISION.items() if k != key}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DECISION, "purposes": {"telepathy": "granted"}}, "purposes"),
        ({**DECISION, "purposes": {"email_marketing": "maybe"}}, "purposes.email_marketing"),
        ({**DECISION, "subject": {"id": "c", "email": "ana@"}}, "subject.email"),
        ({**DECISION, "subject": {"id": "c", "phone": "555-0100"}}, "subject.phone"),
        (without("subject"), "subject"),
        ({**DECISION, "occurred_at": 1700000000}, "occurred_at"),
        ({**DECISION, "purposes": ["email_marketing"]}, "purposes"),
        ({**DECISION, "shoe_size": 43}, "shoe_size"),
        ({**DECISION, "note": "x" * 5000}, "body"),
        ("{not json", "body"),
        ({**DECISION, "tcf_string": "not a consent string"}, "tcf_string"),
        ({**DECISION, "tcf_string": "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"}, "tcf_string"),
        ({**DECISION, "tcf_string": "COvFyGBOvFyGBAbAAAENAPCA"}, "tcf_string"),
    ],
    ids=[
        "unknown-purpose",
        "bad-state",
        "email",
        "phone",
        "no-subject",
        "wrong-type",
        "list",
        "unknown-field",
        "oversized",
        "not-json",
        "tcf-not-base64url",
        "tcf-v1",
        "tcf-truncated",
    ],
)
async def test_bad_input_is_a_problem_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, body: Any, field: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    headers = auth(WRITER) | {"Content-Type": "application/json"}
    response = await client.post("/v1/consents", content=content, headers=headers)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"]
    assert field in [error["field"] for error in problem["errors"]]
    assert await stored_rows(client) == 0


async def test_a_bad_wait_parameter_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/consents?wait=forever", json=DECISION, headers=auth(WRITER))
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "wait"
    assert await stored_rows(client) == 0


async def test_openapi_documents_the_routes_from_the_models(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    operation = document["paths"]["/v1/consents"]["post"]
    assert operation["security"] == [{"bearer": ["consents:write"]}]
    body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref.rsplit("/", 1)[-1] in document["components"]["schemas"]
    assert {"/v1/consents/{decision_id}", "/v1/subjects/{subject_id}", "/healthz"} <= set(document["paths"])


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_an_undecodable_tcf_string_is_a_422_saying_why(client: httpx.AsyncClient) -> None:
    body = {**DECISION, "tcf_string": "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"}
    response = await client.post("/v1/consents", json=body, headers=auth(WRITER))
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    (error,) = response.json()["errors"]
    assert error["field"] == "tcf_string" and "IAB TCF version 1, not 2" in error["message"]
    assert await stored_rows(client) == 0


async def test_a_decodable_tcf_string_is_accepted(client: httpx.AsyncClient) -> None:
    body = {**DECISION, "tcf_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"}
    assert (await client.post("/v1/consents", json=body, headers=auth(WRITER))).status_code == 202


async def test_the_document_says_what_the_api_does(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    for path in ("/v1/reconciliation/runs", "/v1/subjects/{subject_id}/repush"):
        assert paths[path]["post"]["requestBody"]["required"] is False, "an empty body means the defaults"
    listed = {p["name"] for p in paths["/v1/reconciliation"]["get"]["parameters"]}
    assert listed == {"provider", "status", "subject", "cursor", "limit"}
    pattern = re.compile(
        next(b for b in schemas["Decision-Input"]["properties"]["expires_at"]["anyOf"] if "pattern" in b)["pattern"]
    )
    assert not pattern.match("0000-01-01T00:00:00Z") and pattern.match("0001-01-01T00:00:00Z")
    refused = await client.post(
        "/v1/consents", json={**DECISION, "expires_at": "0000-01-01T00:00:00Z"}, headers=auth(WRITER)
    )
    assert refused.status_code == 422, "what the pattern refuses, the API refuses"


async def test_a_method_a_path_lacks_names_every_method_it_has(client: httpx.AsyncClient) -> None:
    answer = await client.request("OPTIONS", "/v1/subjects/cust-42", headers=auth(ADMIN))
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    assert answer.headers["content-type"] == "application/problem+json"

"""Every endpoint's guard (token, scope, per-token limit) and the headers every answer carries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.config import SCOPES, ApiToken, Settings, load_settings
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.service import Gateway
from gateway.store import Store
from tests.e2e.conftest import DECISION, auth
from tests.fakes import fake_adapter

ONLY = {scope: f"only-{scope}-token-abcdefgh" for scope in SCOPES}  # a token holding just that scope
LIMITED = "limited-token-abcdefgh"
IMPORTER = "importer-token-abcdefgh"
IDS = ("decision_id", "delivery_id", "run_id", "erasure_id", "backfill_id")
PATH_VALUES = {name: str(uuid.uuid4()) for name in IDS}


def settings(database_url: str) -> Settings:
    tokens = [ApiToken(name=scope, sha256=hash_token(token), scopes=[scope]) for scope, token in ONLY.items()]
    limited = ApiToken(name="limited", sha256=hash_token(LIMITED), scopes=["consents:write"], requests_per_minute=6)
    importer = ApiToken(name="importer", sha256=hash_token(IMPORTER), decisions_per_minute=1)  # slow refill
    return Settings(database_url=database_url, tokens=[*tokens, limited, importer], token_burst=3)


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Starlette]:
    gateway = Gateway(
        settings(database_url),
        adapters={"fake": fake_adapter()},
        transports={"fake": httpx.MockTransport(lambda _r: httpx.Response(200, json={}))},
    )
    application = create_app(gateway, run_worker=False)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client


def guarded(app: Starlette) -> list[tuple[str, str, str]]:
    """(method, concrete path, required scope) of every endpoint behind a token, found from the
    app itself so a new endpoint joins the matrix without being listed here."""
    found = []
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue
        scope = getattr(route.endpoint, "required_scope", None)
        if scope is None:
            continue
        path = route.path.format(**{**PATH_VALUES, "subject_id": "cust-42", "provider": "fake"})
        found += [(method, path, scope) for method in sorted((route.methods or set()) - {"HEAD"})]
    return found


async def test_every_endpoint_refuses_without_a_valid_token_and_without_its_scope(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    endpoints = guarded(app)
    assert len(endpoints) >= 14 and {scope for *_, scope in endpoints} == set(SCOPES)
    for method, path, scope in endpoints:
        for headers in ({}, auth("not-a-configured-token"), {"Authorization": "Basic abc"}):
            answer = await client.request(method, path, headers=headers, json={})
            assert answer.status_code == 401, (method, path, headers)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert [error["field"] for error in answer.json()["errors"]] == ["Authorization"], answer.text
        for other in set(SCOPES) - {scope, "admin"}:
            answer = await client.request(method, path, headers=auth(ONLY[other]), json={})
            assert answer.status_code == 403, (method, path, other)
            assert answer.json()["detail"] == f"this needs the '{scope}' scope"
        for allowed in {scope, "admin"}:
            answer = await client.request(method, path, headers=auth(ONLY[allowed]), json={})
            assert answer.status_code not in (401, 403), (method, path, allowed, answer.text)


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    answers = [
        await client.post("/v1/consents", json=DECISION, headers=auth(ONLY["consents:write"])),
        await client.get("/v1/subjects/cust-42", headers=auth(ONLY["consents:read"])),
        await client.get("/v1/subjects/cust-42"),  # 401 problem
        await client.get("/v1/nowhere"),  # 404 from the router
        await client.get("/openapi.json"),
        await client.get("/healthz"),
    ]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert answer.headers["referrer-policy"] == "no-referrer"


async def test_a_token_over_its_limit_gets_429_with_retry_after_and_others_are_unaffected(
    client: httpx.AsyncClient,
) -> None:
    statuses = []
    for n in range(5):
        decision = {**DECISION, "subject": {"id": f"limited-{n}"}}
        statuses.append((await client.post("/v1/consents", json=decision, headers=auth(LIMITED))).status_code)
    assert statuses == [202, 202, 202, 429, 429]  # a burst of 3, then one every 10 s
    refused = await client.post("/v1/consents", json=DECISION, headers=auth(LIMITED))
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert refused.json()["title"] == "Too many requests" and "'limited'" in refused.json()["detail"]
    other = await client.post("/v1/consents", json=DECISION, headers=auth(ONLY["consents:write"]))
    assert other.status_code == 202
    history = await client.get("/v1/subjects/limited-3/history", headers=auth(ONLY["consents:read"]))
    assert history.status_code == 404  # a refused decision was not recorded


async def test_a_batch_spends_one_decision_each_from_the_tokens_decision_budget(client: httpx.AsyncClient) -> None:
    def batch(first: int, count: int) -> dict[str, list[dict[str, object]]]:
        return {"decisions": [{**DECISION, "subject": {"id": f"imported-{n}"}} for n in range(first, first + count)]}

    full = await client.post("/v1/consents:batch", json=batch(0, 1000), headers=auth(IMPORTER))
    assert full.status_code == 200 and {r["status"] for r in full.json()["results"]} == {"accepted"}
    refused = await client.post("/v1/consents:batch", json=batch(1000, 2), headers=auth(IMPORTER))
    assert refused.status_code == 429 and "decisions limit" in refused.json()["detail"]
    assert 60 < int(refused.headers["retry-after"]) <= 120, "two more decisions: two minutes at one a minute"
    one = await client.post(
        "/v1/consents", json={**DECISION, "subject": {"id": "imported-1000"}}, headers=auth(IMPORTER)
    )
    assert one.status_code == 429, "a single decision draws from the same budget"
    history = await client.get("/v1/subjects/imported-1000/history", headers=auth(IMPORTER))
    assert history.status_code == 404, "nothing refused was recorded"


@pytest.mark.postgres
async def test_api_processes_on_postgresql_share_each_tokens_limit(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the shared limit lives in PostgreSQL; SQLite is one process")
    stores = [Store.from_url(database_url) for _ in range(3)]  # three API processes' stores
    try:
        # one a minute: however slow this machine is, no slot comes free again during the test
        admissions = [store.admission("shared", 1, burst=4) for store in stores]
        waits = [await admissions[n % 3].admit() for n in range(9)]
    finally:
        for store in stores:
            await store.close()
    assert waits[:4] == [0.0] * 4 and all(0 < wait <= 60.0 for wait in waits[4:]), waits


@pytest.mark.postgres
async def test_on_postgresql_a_batch_takes_its_whole_cost_or_nothing(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the shared limit lives in PostgreSQL; SQLite is one process")
    store = Store.from_url(database_url)
    try:
        decisions = store.admission("importer#decisions", 60, burst=5)
        assert await decisions.admit(5) == 0.0, "a batch the size of the burst, after an idle spell"
        first = await decisions.admit(1)
        assert 0 < first <= 1.0
        second = await decisions.admit(3)
        assert 2.0 < second <= 3.0, "three more: the last of them is three seconds away"
        assert 0 < await decisions.admit(1) <= 1.0, "a refused batch took nothing"
    finally:
        await store.close()


async def test_a_minted_token_works_once_its_block_is_in_the_config(tmp_path: Path) -> None:
    minted = CliRunner().invoke(cli, ["token", "new", "--name", "ci", "--scope", "consents:read"])
    assert minted.exit_code == 0, minted.output
    lines = minted.stdout.splitlines()
    token, block = lines[1], minted.stdout[minted.stdout.index("[[tokens]]") :]
    assert hash_token(token) in block and token not in block
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{tmp_path / "g.db"}"\n{block}')
    loaded = load_settings(config)
    assert [(t.name, t.scopes) for t in loaded.tokens] == [("ci", ["consents:read"])]
    application = create_app(Gateway(loaded, adapters={"fake": fake_adapter()}), run_worker=False, migrate=True)
    async with (
        LifespanManager(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://gateway") as client,
    ):
        assert (await client.get("/v1/subjects/nobody", headers=auth(token))).status_code == 404
        assert (await client.post("/v1/consents", json=DECISION, headers=auth(token))).status_code == 403
    again = CliRunner().invoke(cli, ["token", "new", "--name", "ci", "--scope", "consents:read"])
    assert again.stdout.splitlines()[1] != token  # random every time

"""The admin page keeps the API's rules and answers: one implementation of each action, and a
session that signing out (or removing its token) ends on the server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.http.auth import Authenticator
from tests.e2e.conftest import ADMIN, DECISION, READER, auth
from tests.e2e.pages import csrf, sign_in


@pytest.fixture
async def browser(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The same app over https, as a browser holding the (https-only) session cookie sees it."""
    async with httpx.AsyncClient(transport=client._transport, base_url="https://gateway") as https:
        yield https


async def signed_in(client: httpx.AsyncClient) -> str:
    return await sign_in(client, ADMIN)


async def erased_subject(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/consents", json=DECISION, headers=auth(ADMIN))).status_code == 202
    assert (await client.delete("/v1/subjects/cust-42", headers=auth(ADMIN))).status_code == 202


async def test_signing_out_ends_the_session_for_the_old_cookie_too(browser: httpx.AsyncClient) -> None:
    cookie = await signed_in(browser)
    assert (await browser.get("/admin/")).status_code == 200
    form = {"csrf": await csrf(browser, "/admin/")}
    assert (await browser.post("/admin/logout", data=form)).status_code == 303
    browser.cookies.clear()
    again = await browser.get("/admin/", headers={"Cookie": f"consent_gateway_admin={cookie}"})  # a copied cookie
    assert again.status_code == 303 and again.headers["location"] == "/admin/login"


async def test_removing_the_token_from_the_config_ends_its_sessions(
    client: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    await signed_in(browser)
    authenticator = client._transport.app.state.authenticator  # type: ignore[attr-defined]
    assert isinstance(authenticator, Authenticator)
    authenticator.tokens = [token for token in authenticator.tokens if token.name != "admin"]  # a config reload
    assert (await browser.get("/admin/")).status_code == 303


@pytest.mark.parametrize(
    ("page", "api"),
    [
        ("/admin/subjects/cust-42", "/v1/subjects/cust-42"),
        ("/admin/subjects/nobody", "/v1/subjects/nobody"),
    ],
)
async def test_a_subject_page_answers_what_the_api_answers(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, page: str, api: str
) -> None:
    await erased_subject(client)
    await signed_in(browser)
    shown, answered = await browser.get(page), await client.get(api, headers=auth(READER))
    assert shown.status_code == answered.status_code and shown.status_code in (404, 410)
    assert answered.json()["title"] in shown.text


@pytest.mark.parametrize(
    ("action", "form", "api", "body"),
    [
        ("/admin/subjects/cust-42/repush", {"provider": "fake"}, "/v1/subjects/cust-42/repush", {}),
        ("/admin/subjects/cust-42/adopt", {"provider": "fake"}, "/v1/subjects/cust-42/providers/fake/adopt", None),
        ("/admin/subjects/nobody/repush", {}, "/v1/subjects/nobody/repush", {}),
        (
            "/admin/subjects/cust-42/repush",
            {"provider": "nope"},
            "/v1/subjects/cust-42/repush",
            {"providers": ["nope"]},
        ),
    ],
    ids=["repush-erased", "adopt-erased", "repush-unknown", "repush-unknown-provider"],
)
async def test_an_action_the_api_refuses_the_page_refuses_alike(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    action: str,
    form: dict[str, str],
    api: str,
    body: dict[str, str] | None,
) -> None:
    await erased_subject(client)
    await signed_in(browser)
    refused = await browser.post(action, data=form | {"csrf": await csrf(browser, "/admin/")})
    answered = await client.post(api, json=body, headers=auth(ADMIN))
    assert answered.status_code in (404, 409, 422), answered.text
    assert refused.status_code == answered.status_code, refused.text
    assert answered.json()["title"] in refused.text
    assert refused.headers["x-frame-options"] == "DENY"

"""The API, the admin page and the CLI answer alike: each action's rules live once, in the gateway
(``gateway.service``), and the three only translate. One table, each row an action on an erased,
unknown or waiting subject or delivery, or a store too busy to take it, tried through all three on
one store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from gateway.config import load_settings
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.service import Gateway
from tests.e2e.conftest import DECISION, auth
from tests.e2e.pages import csrf, sign_in

ADMIN = "one-answer-admin-token-0123456789"
NO_DELIVERY = str(uuid.UUID(int=7))


@dataclass(frozen=True)
class Action:
    api: tuple[str, str, dict[str, object] | None]  # method, path, JSON body
    page: tuple[str, dict[str, str]] | None  # the admin form's path and fields (None: not on the page)
    cli: list[str]
    busy: bool = False  # the store cannot take it now (its lock wait ran out)


ACTIONS = {
    "repush-erased": Action(
        ("POST", "/v1/subjects/cust-42/repush", {}),
        ("/admin/subjects/cust-42/repush", {}),
        ["subjects", "repush", "cust-42"],
    ),
    "repush-store-busy": Action(
        ("POST", "/v1/subjects/cust-7/repush", {}),
        ("/admin/subjects/cust-7/repush", {}),
        ["subjects", "repush", "cust-7"],
        busy=True,
    ),
    "repush-unknown": Action(
        ("POST", "/v1/subjects/nobody/repush", {}),
        ("/admin/subjects/nobody/repush", {}),
        ["subjects", "repush", "nobody"],
    ),
    "repush-unknown-provider": Action(
        ("POST", "/v1/subjects/cust-7/repush", {"providers": ["nope"]}),
        ("/admin/subjects/cust-7/repush", {"provider": "nope"}),
        ["subjects", "repush", "cust-7", "--provider", "nope"],
    ),
    "adopt-erased": Action(
        ("POST", "/v1/subjects/cust-42/providers/masivo/adopt", None),
        ("/admin/subjects/cust-42/adopt", {"provider": "masivo"}),
        ["subjects", "adopt", "cust-42", "--provider", "masivo"],
    ),
    "adopt-unknown": Action(
        ("POST", "/v1/subjects/nobody/providers/masivo/adopt", None),
        ("/admin/subjects/nobody/adopt", {"provider": "masivo"}),
        ["subjects", "adopt", "nobody", "--provider", "masivo"],
    ),
    "adopt-never-read": Action(
        ("POST", "/v1/subjects/cust-7/providers/masivo/adopt", None),
        ("/admin/subjects/cust-7/adopt", {"provider": "masivo"}),
        ["subjects", "adopt", "cust-7", "--provider", "masivo"],
    ),
    "erase-unknown": Action(("DELETE", "/v1/subjects/nobody", None), None, ["subjects", "erase", "nobody"]),
    "retry-unknown": Action(
        ("POST", f"/v1/deliveries/{NO_DELIVERY}/retry", None),
        (f"/admin/deliveries/{NO_DELIVERY}/retry", {}),
        ["deliveries", "retry", NO_DELIVERY],
    ),
    "replay-unknown": Action(
        ("POST", f"/v1/deliveries/{NO_DELIVERY}/replay", None), None, ["deliveries", "replay", NO_DELIVERY]
    ),
    "replay-waiting": Action(
        ("POST", "/v1/deliveries/{waiting}/replay", None), None, ["deliveries", "replay", "{waiting}"]
    ),
    "retry-waiting": Action(
        ("POST", "/v1/deliveries/{waiting}/retry", None),
        ("/admin/deliveries/{waiting}/retry", {}),
        ["deliveries", "retry", "{waiting}"],
    ),
}


class Surfaces:
    """One store seen through the API, a signed-in browser on the admin page, and the CLI."""

    def __init__(self, config: Path, api: httpx.AsyncClient, browser: httpx.AsyncClient, waiting: str) -> None:
        self.config, self.api, self.browser, self.waiting = config, api, browser, waiting

    def filled(self, text: str) -> str:
        return text.replace("{waiting}", self.waiting)

    async def through_api(self, action: Action) -> httpx.Response:
        method, path, body = action.api
        return await self.api.request(method, self.filled(path), json=body, headers=auth(ADMIN))

    async def through_page(self, action: Action) -> httpx.Response | None:
        if action.page is None:
            return None
        path, form = action.page
        token = await csrf(self.browser, "/admin/")
        return await self.browser.post(self.filled(path), data=form | {"csrf": token})

    async def through_cli(self, action: Action) -> tuple[int, str]:
        """In a thread of its own: the CLI runs its own event loop, as from a shell."""
        args = [*(self.filled(arg) for arg in action.cli), "--config", str(self.config)]
        result = await asyncio.to_thread(CliRunner().invoke, cli_app, args, env={"COLUMNS": "200"})
        return result.exit_code, " ".join(result.output.split())


@pytest.fixture
async def surfaces(tmp_path: Path) -> AsyncIterator[Surfaces]:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""\
database_url = "sqlite+aiosqlite:///{tmp_path / "gateway.db"}"

[[tokens]]
name = "ops"
sha256 = "{hash_token(ADMIN)}"
scopes = ["admin"]

[worker]
enabled = false  # nothing is delivered: removals and pushes stay waiting

[providers.masivo]
base_url = "https://masivo.invalid/api/storefront/v1"
api_key = "masivo-key-0123456789"
"""
    )
    gateway = Gateway(load_settings(config))
    app = create_app(gateway, migrate=True)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://gateway") as api,
            httpx.AsyncClient(transport=transport, base_url="https://gateway") as browser,
        ):
            for subject in ("cust-42", "cust-7"):
                decision = DECISION | {"subject": {"id": subject}}
                assert (await api.post("/v1/consents", json=decision, headers=auth(ADMIN))).status_code == 202
            waiting = (await api.get("/v1/deliveries?subject=cust-7", headers=auth(ADMIN))).json()["items"][0]["id"]
            assert (await api.delete("/v1/subjects/cust-42", headers=auth(ADMIN))).status_code == 202
            await sign_in(browser, ADMIN)
            yield Surfaces(config, api, browser, waiting)


async def locked(*_args: object) -> None:
    raise OperationalError("UPDATE subjects …", {}, Exception("database is locked"))


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_the_api_the_page_and_the_cli_answer_alike(
    surfaces: Surfaces, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    action = ACTIONS[name]
    if action.busy:
        monkeypatch.setattr(Gateway, "repush", locked)
    answered = await surfaces.through_api(action)
    refused = answered.status_code >= 400
    title = answered.json()["title"] if refused else None

    shown = await surfaces.through_page(action)
    if shown is not None:
        assert shown.status_code == answered.status_code if refused else shown.status_code == 303, shown.text
        assert title is None or title in shown.text

    exit_code, output = await surfaces.through_cli(action)
    assert (exit_code != 0) == refused, output
    assert title is None or title in output, output

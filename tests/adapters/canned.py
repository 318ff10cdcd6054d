"""Canned provider answers for the adapters' own tests: one fake transport and one driver, shared by
every provider's test module (each adds only what its provider does differently)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from adapters.base import Adapter, drive, sender
from adapters.errors import ProviderError

T = TypeVar("T")


class Canned:
    """A MockTransport handler: records what it is sent and answers the scripted responses in order,
    then ``otherwise(request)`` (a provider's own fake overrides it)."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self.answers = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if self.answers else self.otherwise(request)

    def otherwise(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(request.method, request.url.path) for request in self.requests]

    def bodies(self) -> list[Any]:
        return [json.loads(request.content) for request in self.requests]


async def run(
    adapter: Adapter,
    flow: Generator[httpx.Request, httpx.Response, T],
    to: Canned | Starlette,
    base_url: str,
    auth: httpx.Auth | None = None,
) -> T:
    """Drive one of the adapter's flows against canned answers or a simulator app, with the adapter's
    own auth unless told otherwise."""
    transport = httpx.MockTransport(to) if isinstance(to, Canned) else httpx.ASGITransport(app=to)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, auth=auth or adapter.auth()) as client:
        return await drive(flow, sender(client))


Classified = tuple[httpx.Response, type[ProviderError], str, float | None]
"""An answer, the error it must raise, text the error must hold, and the Retry-After it must carry."""


async def assert_classified(attempt: Awaitable[Any], expected: Classified, *secrets: str) -> None:
    """``attempt`` (a push answered ``expected[0]``) fails as ``expected`` says, naming no secret."""
    _answer, error, text, retry_after = expected
    with pytest.raises(error) as raised:
        await attempt
    assert type(raised.value) is error and text in str(raised.value)
    assert getattr(raised.value, "retry_after", None) == retry_after
    for secret in secrets:
        assert secret not in str(raised.value) and secret not in repr(raised.value)

"""The worker's outbound client: https only, no redirects followed, answers capped, named."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError

from adapters.errors import PermanentError, TransientError
from gateway.delivery.worker import USER_AGENT, Lane
from tests.fakes import FakeSettings, fake_adapter

LIMIT = 4096


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def lane(handler: httpx.MockTransport, **settings: object) -> Lane:
    return Lane(fake_adapter(max_response_bytes=LIMIT, **settings), None, transport=handler)


async def push(handler: httpx.MockTransport) -> httpx.Response:
    the_lane = lane(handler)
    try:
        return await the_lane.send(httpx.Request("PUT", "/consents/c-1", content=b"{}"))
    finally:
        await the_lane.aclose()


def test_plain_http_is_refused_except_to_loopback_or_when_allowed() -> None:
    with pytest.raises(ValidationError, match="base_url must be https://"):
        FakeSettings(base_url="http://api.masivo.example")
    for allowed in ("http://127.0.0.1:9000/sim", "http://localhost/x", "http://[::1]:81"):
        assert FakeSettings(base_url=allowed).base_url == allowed
    assert FakeSettings(base_url="http://sim.internal", allow_http=True).allow_http
    with pytest.raises(ValidationError, match="absolute https:// URL"):
        FakeSettings(base_url="ftp://files.example")


async def test_an_answer_over_the_limit_is_refused_while_it_streams_in() -> None:
    def endless(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(*[b"x" * 1024] * 64))  # chunked, no content-length

    with pytest.raises(TransientError, match=f"over the {LIMIT} byte limit"):
        await push(httpx.MockTransport(endless))


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    with pytest.raises(TransientError, match=f"answer of {LIMIT * 2} bytes"):
        await push(httpx.MockTransport(lambda _r: httpx.Response(200, content=b"y" * LIMIT * 2)))


async def test_a_compressed_answer_is_capped_on_what_it_expands_to() -> None:
    bomb = gzip.compress(b"0" * LIMIT * 50)
    assert len(bomb) < LIMIT

    def compressed(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(bomb), headers={"content-encoding": "gzip"})

    with pytest.raises(TransientError, match="over the"):
        await push(httpx.MockTransport(compressed))


async def test_an_answer_within_the_limit_arrives_whole_and_decoded() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=gzip.compress(b'{"ok":true}'), headers={"content-encoding": "gzip"})

    response = await push(httpx.MockTransport(answer))
    assert response.json() == {"ok": True}
    assert seen[0].headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("consent-gateway/")


async def test_a_redirect_is_neither_followed_nor_taken_for_success() -> None:
    followed: list[str] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        followed.append(str(request.url))
        return httpx.Response(302, headers={"location": "https://evil.example/steal"})

    response = await push(httpx.MockTransport(redirect))
    assert response.status_code == 302 and followed == ["https://fake.example/consents/c-1"]
    with pytest.raises(PermanentError, match="redirect, which is not followed"):
        fake_adapter().check(response)

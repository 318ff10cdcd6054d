"""httpx requests and responses to and from their cassette form; shared by recorder and replayer
so both see a request the same way."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import httpx

from adapters.registry import providers
from gateway.testing.cassette import RecordedRequest, RecordedResponse

REQUEST_HEADERS = frozenset({"content-type", "authorization", "proxy-authorization", "x-api-key"})
RESPONSE_HEADERS = frozenset({"content-type", "retry-after", "location", "etag"})
"""Only headers that change what a client does; the rest (dates, servers, lengths) is noise."""


@cache
def request_headers() -> frozenset[str]:
    """The request headers a cassette keeps: content type and credentials (scrubbed), and those each
    registered provider says change what it does (``Provider.cassette_headers``)."""
    return REQUEST_HEADERS.union(*(provider.cassette_headers for provider in providers().values()))


def relative_path(url: httpx.URL, base_url: str) -> str:
    """The path below the base URL's path, still percent-encoded as sent."""
    path = url.raw_path.split(b"?", 1)[0].decode("ascii")
    base = httpx.URL(base_url).raw_path.split(b"?", 1)[0].decode("ascii").rstrip("/")
    return path[len(base) :] if base and path.startswith(base + "/") else path


def _decoded(content: bytes) -> tuple[Any, str | None]:
    """(JSON body, None), or (None, text) for a body that is not JSON; (None, None) when empty."""
    if not content.strip():
        return None, None
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text), None
    except ValueError:
        return None, text


def _kept(headers: httpx.Headers, allowed: frozenset[str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name in allowed}


def recorded_request(request: httpx.Request, base_url: str) -> RecordedRequest:
    body, text = _decoded(request.content)
    return RecordedRequest(
        method=request.method,
        path=relative_path(request.url, base_url),
        query=list(request.url.params.multi_items()),
        headers=_kept(request.headers, request_headers()),
        body=body,
        text=text,
    )


def recorded_response(response: httpx.Response) -> RecordedResponse:
    body, text = _decoded(response.content)
    return RecordedResponse(
        status=response.status_code, headers=_kept(response.headers, RESPONSE_HEADERS), body=body, text=text
    )


def content_of(body: Any, text: str | None) -> bytes:
    if text is not None:
        return text.encode("utf-8")
    return b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")


def to_response(recorded: RecordedResponse, request: httpx.Request) -> httpx.Response:
    """A fresh response for ``request``: no content-length or encoding left over from the original."""
    return httpx.Response(
        recorded.status,
        headers=recorded.headers,
        content=content_of(recorded.body, recorded.text),
        request=request,
    )

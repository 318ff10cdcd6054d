"""uvicorn as the gateway runs it: a client gets a deadline for its request headers, a request
it cannot parse gets a problem document, and a SIGTERM that drained cleanly exits 0.

uvicorn times out idle keep-alive connections only; a client that opens a connection and sends
its headers a byte at a time (or not at all) holds a socket for as long as it likes. The
request *body* has its own deadline in the app (``body_timeout_s``: a 408 problem).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.http.problems import MEDIA_TYPE
from gateway.refusals import TYPE_BASE

HEADER_TIMEOUT_S = 10.0


class HeaderDeadline(H11Protocol):
    """h11, closing a connection whose next request's headers are not complete in time."""

    def __init__(self, *args: Any, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.header_deadline is not None:
            self.header_deadline.cancel()  # the headers are in: the app's body deadline takes over
            self.header_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (bad header syntax) answered as every other error: a problem
        document (uvicorn's own is text/plain, which no client of this API expects)."""
        problem = {"type": f"{TYPE_BASE}bad-request", "title": "Bad request", "status": 400, "detail": msg}
        body = json.dumps(problem).encode()
        headers = [
            (b"content-type", MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _await_headers(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
        self.header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_late)

    def _headers_too_late(self) -> None:
        self.header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def config(app: ASGIApp, host: str, port: int, header_timeout_s: float = HEADER_TIMEOUT_S) -> uvicorn.Config:
    protocol = functools.partial(HeaderDeadline, header_timeout_s=header_timeout_s)
    return uvicorn.Config(app, host=host, port=port, log_config=None, http=protocol)  # type: ignore[arg-type]


class DrainingServer(uvicorn.Server):
    """uvicorn, except that a SIGTERM it shut down cleanly on exits 0: uvicorn re-raises the
    signal afterwards, and a process manager would count a drained worker as killed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def serve(app: ASGIApp, host: str, port: int, header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    DrainingServer(config(app, host, port, header_timeout_s)).run()

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
import gc
import json
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.problems import MEDIA_TYPE
from gateway.refusals import TYPE_BASE

HEADER_TIMEOUT_S = 10.0


class HeaderDeadline(HttpToolsProtocol):
    """httptools (llhttp parses in C; h11, in Python, was a large share of each request's CPU),
    closing a connection whose next request's headers are not complete in time."""

    def __init__(self, *args: Any, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()  # the headers are in: the app's body deadline takes over
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its headers are in already: the next request starts now
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse (bad header syntax) answered as every other error: a problem
        document (uvicorn's own is text/plain, which no client of this API expects)."""
        problem = {"type": f"{TYPE_BASE}bad-request", "title": "Bad request", "status": 400, "detail": msg}
        body = json.dumps(problem).encode()
        head = f"HTTP/1.1 400 Bad Request\r\ncontent-type: {MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"connection: close\r\n\r\n" + body)
        self.transport.close()

    def _await_headers(self) -> None:
        self._stop_waiting()
        self.header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_late)

    def _stop_waiting(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_too_late(self) -> None:
        self.header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def config(app: ASGIApp, host: str, port: int, header_timeout_s: float = HEADER_TIMEOUT_S) -> uvicorn.Config:
    """httptools with the header deadline, on uvloop ("auto": where it is installed, as uvicorn[standard] does)."""
    protocol = functools.partial(HeaderDeadline, header_timeout_s=header_timeout_s)
    return uvicorn.Config(app, host=host, port=port, log_config=None, http=protocol, loop="auto")  # type: ignore[arg-type]


class DrainingServer(uvicorn.Server):
    """uvicorn, except that a SIGTERM it shut down cleanly on exits 0: uvicorn re-raises the
    signal afterwards, and a process manager would count a drained worker as killed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def serve(app: ASGIApp, host: str, port: int, header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    collect_less()
    DrainingServer(config(app, host, port, header_timeout_s)).run()


def collect_less() -> None:
    """Start-up's objects (modules, schemas, the app) live as long as the process: frozen out of the
    cyclic collector's reach, its full passes walk only what requests allocate; and it runs a tenth
    as often, since requests leave few cycles. Under ingest load: about a fifth less CPU per decision."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)

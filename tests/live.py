"""An ASGI app served by uvicorn on a loopback port in a thread: the real HTTP path in tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from gateway.http.server import HEADER_TIMEOUT_S, config


@contextmanager
def served(app: ASGIApp, port: int, header_timeout_s: float = HEADER_TIMEOUT_S) -> Iterator[str]:
    """``app`` (lifespan included) on 127.0.0.1:``port`` as ``serve`` runs it, until the block
    ends; yields its base URL."""
    server = uvicorn.Server(config(app, "127.0.0.1", port, header_timeout_s))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

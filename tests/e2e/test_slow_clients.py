"""Clients that trickle: a connection whose headers never end is closed, a body that never ends
is a 408, and neither holds the server up for anyone else (real uvicorn on a loopback port)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.demo import demo_app
from tests.live import served
from tests.processes import free_port

TOKEN = "slow-clients-token-0123456789"
PATIENCE_S = 30.0  # how long a test waits for the server to act; the deadlines below are far shorter


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONSENT_GATEWAY_BODY_TIMEOUT_S", "0.5")
    port = free_port()
    with served(demo_app("127.0.0.1", port, TOKEN), port, header_timeout_s=0.5) as base:
        yield base


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE_S)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the event the test waits on)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_connection_whose_headers_never_end_is_closed(live: str) -> None:
    held = [connect(live) for _ in range(20)]
    for sock in held:
        sock.sendall(b"POST /v1/consents HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    began = time.monotonic()
    for sock in held:
        assert read_all(sock) == b"", "closed without an answer"
        sock.close()
    assert time.monotonic() - began < PATIENCE_S
    assert httpx.get(f"{live}/healthz", timeout=PATIENCE_S).status_code == 200, "others are served meanwhile"


def test_a_body_that_never_ends_is_a_408_naming_body(live: str) -> None:
    sock = connect(live)
    head = (
        f"POST /v1/consents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"subject": {"id": "slow"}')  # 26 of the 400 bytes promised
    answer = read_all(sock).decode()
    sock.close()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"field":"body"' in answer and "body-too-slow" in answer
    history = httpx.get(f"{live}/v1/subjects/slow", headers={"Authorization": f"Bearer {TOKEN}"})
    assert history.status_code == 404, "nothing recorded"


def test_a_request_the_server_cannot_parse_is_a_problem_document(live: str) -> None:
    sock = connect(live)
    sock.sendall(b"GET /v1/subjects/x HTTP/1.1\r\nHost: x\r\nw\x16jcD;\r\n\r\n")  # not a header line
    answer = read_all(sock).decode()
    sock.close()
    assert answer.startswith("HTTP/1.1 400"), answer
    assert "content-type: application/problem+json" in answer.lower() and '"status": 400' in answer

"""Secrets never reach a log line: structlog events, their tracebacks, and other libraries' loggers."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from gateway.redaction import THIRD_PARTY_LOGGERS, configure_logging, redact

SECRET = "s3cr3t-value-0123456789"


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).filters.clear()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "consent_gateway", False)]:
        root.removeHandler(handler)


def test_known_values_and_secret_shaped_fragments_are_replaced() -> None:
    text = f"GET /acme?apiKey={SECRET[:5]}xyz&x=1 Authorization: Bearer abc.def.ghi and {SECRET}"
    assert redact(text, [SECRET]) == "GET /acme?apiKey=<redacted>&x=1 Authorization: Bearer <redacted> and <redacted>"


def test_a_logged_exception_keeps_its_traceback_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging([SECRET])
    try:
        raise RuntimeError(f"adapter bug near https://api.example/consents?apiKey={SECRET}")
    except RuntimeError:
        structlog.get_logger("consent_gateway.worker").exception("delivery_crashed", api_key=SECRET)
    line = json.loads(caplog.messages[-1])
    assert "RuntimeError: adapter bug near" in line["exception"] and "Traceback" in line["exception"]
    assert SECRET not in json.dumps(line) and line["api_key"] == "<redacted>"


def test_other_libraries_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging([SECRET])
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logging.getLogger("uvicorn.access").info('"%s" 200', f"POST /intempt?apiKey={SECRET}")
    assert caplog.messages == ['"POST /intempt?apiKey=<redacted>" 200']


EMAIL, PHONE = "ana.lopez@example.com", "+14155550123"


def test_contact_data_is_masked_in_our_events_and_in_other_libraries_lines(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging([SECRET])
    structlog.get_logger("consent_gateway.worker").warning(
        "delivery_dead", subject="cust-1", error=f"wix: no consent for {EMAIL} or {PHONE}"
    )
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: %s "HTTP/1.1 404"', "GET https://w/get-by?type=EMAIL&email=ana.lopez%40example.com"
        )
        logging.getLogger("httpx").info("phone lookup %s", "phone=%2B14155550123")
    ours, theirs, encoded = caplog.messages[-3:]
    assert (
        json.loads(ours)["error"] == "wix: no consent for <email> or <phone>"
        and json.loads(ours)["subject"] == "cust-1"
    )
    assert theirs == 'HTTP Request: GET https://w/get-by?type=EMAIL&email=<email> "HTTP/1.1 404"'
    assert encoded == "phone lookup phone=<phone>"


def test_other_libraries_lines_are_written_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging([SECRET])
    logging.getLogger("uvicorn.access").info('127.0.0.1:5 - "POST /v1/consents?x=%s" 202', EMAIL)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == '127.0.0.1:5 - "POST /v1/consents?x=<email>" 202'
    assert (line["logger"], line["level"]) == ("uvicorn.access", "info") and line["timestamp"].endswith("Z")


def test_lines_go_to_the_stderr_of_the_moment_not_one_closed_since(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run under a captured stderr must not leave logging writing to a closed stream."""
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    configure_logging([SECRET])
    captured.close()
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    logging.getLogger("httpx").warning("after the command")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")  # quiet
    lines = [json.loads(line) for line in now.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["after the command"]


def test_console_lines_are_text_scrubbed_alike_and_keep_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """log_format = "console": one readable line per event, secrets and contact data scrubbed the
    same way, an exception's traceback in plain text (no rich rendering of locals)."""
    configure_logging([SECRET], "info", console=True)
    try:
        raise RuntimeError(f"adapter bug near ?apiKey={SECRET}")
    except RuntimeError:
        structlog.get_logger("consent_gateway.worker").exception("delivery_crashed", email=EMAIL)
    logging.getLogger("httpx").info("GET https://x/?email=%s", EMAIL)
    written = capsys.readouterr().err
    assert "delivery_crashed" in written and "Traceback" in written and "RuntimeError: adapter bug" in written
    assert "[httpx]" in written and not written.lstrip().startswith("{")
    assert SECRET not in written and EMAIL not in written


def test_the_level_is_the_least_severe_line_written(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging([SECRET], "warning")
    structlog.get_logger("consent_gateway.worker").info("delivery_succeeded")
    structlog.get_logger("consent_gateway.worker").warning("lease_lapsed")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["lease_lapsed"]

"""Scrub secrets from anything the gateway writes down: errors, logs, problem bodies."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

SECRET_KEY = re.compile(r"(secret|token|password|api[_-]?key|authorization)", re.IGNORECASE)
SECRET_PARAM = re.compile(r"(?i)\b(apikey|api_key|access_token|token)=[^&\s\"']+")
BEARER = re.compile(r"(?i)\bbearer\s+[\w.~+/=-]+")
EMAIL = re.compile(r"[\w.!#$%'*+^`{|}~-]+(@|%40)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")  # not /?&= (URLs)
PHONE = re.compile(r"(\+|%2B)[1-9]\d{6,14}\b")


def mask_contacts(text: str) -> str:
    """Emails and E.164 phone numbers (also URL-encoded, as in a query string) as ``<email>`` and
    ``<phone>``: contact data is shown to no one it need not be."""
    return PHONE.sub("<phone>", EMAIL.sub("<email>", text))


def mask_values(text: str, values: Iterable[str]) -> str:
    """Each of ``values`` (a person's own texts: a note, a TCF string) as ``<personal>``."""
    for value in sorted(values, key=len, reverse=True):  # a note that contains the email goes whole
        text = text.replace(value, "<personal>")
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values and secret-shaped fragments (``apiKey=…``, ``Bearer …``)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = SECRET_PARAM.sub(r"\1=<redacted>", text)
    return BEARER.sub("Bearer <redacted>", text)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Secrets redacted and contact data masked: what any log line gets before it is written."""
    return mask_contacts(redact(text, secrets))


class Redactor:
    """structlog processor: secret-named keys are masked, every string value scrubbed of secrets
    and contact data (an email in a URL, a phone in an error text)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if SECRET_KEY.search(key):
                event[key] = "<redacted>"
            elif isinstance(value, str):
                event[key] = scrub(value, self.secrets)
        return event


class RedactingFilter(logging.Filter):
    """For other libraries' loggers: uvicorn's access log and httpx print request URLs, where
    Intempt's apiKey and Wix's get-by email travel in the query string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(OURS):  # ours were scrubbed field by field, then rendered
            record.msg, record.args = scrub(record.getMessage(), self.secrets), ()
        return True


class JSONLines(logging.Formatter):
    """Other libraries' records as JSON lines like structlog's; ours arrive rendered already."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.startswith(OURS):
            return message
        line = {
            "event": message,
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
        }
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line)


class ConsoleLines(logging.Formatter):
    """Other libraries' records as one readable line each, like structlog's console renderer."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.startswith(OURS):
            return message
        when = datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z")
        return f"{when} [{record.levelname.lower():<9}] {message} [{record.name}]"


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged, not when logging was set up:
    a command run under a captured stderr (typer's runner, pytest) must not leave a handler
    holding a stream that is closed by the time the next line comes."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


OURS = "consent_gateway"
QUIET_LOGGERS = (
    "alembic.runtime.migration",  # "Context impl SQLiteImpl." on every schema check
    "aiosqlite",  # two lines per statement at debug
)
THIRD_PARTY_LOGGERS = ("uvicorn.access", "uvicorn.error", "httpx", "httpcore")


def configure_logging(
    secrets: Iterable[str] = (), level: int | str = logging.INFO, console: bool = False, stderr: bool = True
) -> None:
    """Every log line as JSON (or, with ``console``, as text for a terminal) with secrets and
    contact data scrubbed, including what uvicorn and httpx log: at their loggers (so any handler
    gets it clean) and again at ours (any logger). ``level``: a number or a name ("warning").
    ``stderr=False`` adds no handler of ours: the lines go to whatever handlers the root logger
    has (pytest's log capture, in the testing harness)."""
    level = logging.getLevelNamesMapping()[level.upper()] if isinstance(level, str) else level
    secrets = list(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    for old in [h for h in root.handlers if getattr(h, "consent_gateway", False)]:
        root.removeHandler(old)
    if stderr:
        handler = CurrentStderr()
        handler.consent_gateway = True  # type: ignore[attr-defined]  # ours, to replace on the next call
        handler.setFormatter(ConsoleLines() if console else JSONLines())
        handler.addFilter(RedactingFilter(secrets))
        root.addHandler(handler)
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        for old_filter in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old_filter)
        logger.addFilter(RedactingFilter(secrets))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # the traceback as text, so it is scrubbed too
            Redactor(secrets),
            (
                structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
                if console
                else structlog.processors.JSONRenderer()
            ),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )

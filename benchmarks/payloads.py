"""The decisions every part sends, built in one place so ingest, batch, fan-out and delivery
measure the same shape (and the load generator, which imports only this, starts fast)."""

from __future__ import annotations

import json
from typing import Any

TOKEN = "benchmark-token-0123456789"
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
OCCURRED_AT = "2026-01-01T10:00:00Z"  # in the past: a decision dated ahead of the clock is refused
PURPOSES = {"email_marketing": "granted", "sms_marketing": "denied", "analytics": "granted"}
MARKER = "SUBJECTMARKER"  # stands for the subject id in a body template


def decision(subject_id: str, index: int = 0, phone: str | None = None) -> dict[str, Any]:
    """One decision for a new subject: an email and a phone of its own (Wix keeps one consent per
    address, so shared addresses would change its flow), three purposes, a TCF string Masivo accepts."""
    phone = phone or f"+1415{index % 10**7:07d}"
    return {
        "subject": {"id": subject_id, "email": f"{subject_id}@example.com", "phone": phone},
        "purposes": PURPOSES,
        "tcf_string": TCF,
        "occurred_at": OCCURRED_AT,
        "source": "web",
    }


def body_parts() -> list[str]:
    """A single decision's JSON split where its key goes: ``key.join(parts)`` is a body. The key is
    the subject id, its email's local part and its phone after ``+1``, so it is digits (at most 13):
    every subject has addresses of its own. Both load generators build bodies this way, so neither
    pays for json.dumps per request."""
    return json.dumps(decision(MARKER, phone=f"+1{MARKER}"), separators=(",", ":")).split(MARKER)


def key_prefix(round_: int, server: int) -> str:
    """The digits every key of one load round starts with (a load generator appends its own)."""
    return f"{round_:03d}{server}"


def batch_body(prefix: str, size: int, first: int) -> bytes:
    """``{"decisions": [...]}`` with ``size`` new subjects ``{prefix}{first}`` onwards."""
    items = [decision(f"{prefix}{first + n}", first + n) for n in range(size)]
    return json.dumps({"decisions": items}, separators=(",", ":")).encode()

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


def decision(subject_id: str, index: int = 0) -> dict[str, Any]:
    """One decision for a new subject: an email and a phone of its own (Wix keeps one consent per
    address, so shared addresses would change its flow), three purposes, a TCF string Masivo accepts."""
    return {
        "subject": {"id": subject_id, "email": f"{subject_id}@example.com", "phone": f"+1415{index % 10**7:07d}"},
        "purposes": PURPOSES,
        "tcf_string": TCF,
        "occurred_at": OCCURRED_AT,
        "source": "web",
    }


def body_parts() -> list[str]:
    """A single decision's JSON split where the subject id goes: ``id.join(parts)`` is a body.
    Both load generators build bodies this way, so neither pays for json.dumps per request."""
    return json.dumps(decision(MARKER), separators=(",", ":")).split(MARKER)


def batch_body(prefix: str, size: int, first: int) -> bytes:
    """``{"decisions": [...]}`` with ``size`` new subjects ``{prefix}{first}`` onwards."""
    items = [decision(f"{prefix}{first + n}", first + n) for n in range(size)]
    return json.dumps({"decisions": items}, separators=(",", ":")).encode()

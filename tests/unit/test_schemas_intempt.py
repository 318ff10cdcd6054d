"""Intempt wire schema: the documented fields and the rules the server and SDK enforce."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.intempt import ConsentData, ErrorBody, epoch

MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
S = MS // 1000
BASE: dict[str, Any] = {
    "action": "accept",
    "timestamp": MS,
    "validUntil": "unlimited",
    "source": "web",
    "userId": "u1",
}


def test_epoch_is_exact_in_either_unit() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    assert (epoch(moment, "ms"), epoch(moment, "s")) == (MS + 999, S)


@pytest.mark.parametrize(
    ("changes", "unit"),
    [
        ({}, "ms"),
        ({"action": "reject"}, "ms"),
        ({"validUntil": MS + 1}, "ms"),
        ({"category": "email", "email": "a@example.com", "message": "banner"}, "ms"),
        ({"userId": None, "profileId": "profile_mobile_789", "sourceId": "1234567890123456789"}, "ms"),
        ({"timestamp": S}, "s"),
        ({"timestamp": S, "validUntil": MS + 1000}, "s"),
        ({"timestamp": epoch(datetime(2010, 1, 1, tzinfo=UTC), "ms")}, "ms"),
    ],
)
def test_consent_data_accept(changes: dict[str, Any], unit: str) -> None:
    data = {**BASE, **changes}
    parsed = ConsentData.model_validate(data, context={"timestamp_unit": unit})
    assert parsed.model_dump(exclude_unset=True) == data, "read as sent: nothing dropped or changed"
    assert (parsed.action, parsed.timestamp, parsed.validUntil) == (
        data["action"],
        data["timestamp"],
        data["validUntil"],
    )


@pytest.mark.parametrize(
    ("changes", "unit", "why"),
    [
        ({"action": "maybe"}, "ms", "action"),
        ({"action": None}, "ms", "action"),
        ({"timestamp": S}, "ms", "between 2010 and 2040"),  # seconds where ms are configured
        ({"timestamp": MS}, "s", "between 2010 and 2040"),  # ms where seconds are configured
        ({"timestamp": epoch(datetime(2009, 12, 31, tzinfo=UTC), "ms")}, "ms", "between 2010 and 2040"),
        ({"timestamp": epoch(datetime(2040, 1, 1, tzinfo=UTC), "ms")}, "ms", "replaces later ones"),
        ({"timestamp": str(MS)}, "ms", "timestamp"),
        ({"timestamp": True}, "ms", "timestamp"),
        ({"validUntil": S + 3600}, "ms", "milliseconds"),
        ({"validUntil": "forever"}, "ms", "validUntil"),
        ({"validUntil": MS}, "ms", "later than timestamp"),
        ({"timestamp": S, "validUntil": MS - 1}, "s", "later than timestamp"),
        ({"source": ""}, "ms", "source"),
        ({"userId": None}, "ms", "userId or profileId"),
        ({"userId": None, "profileId": "p1"}, "ms", "profileId requires sourceId"),
        ({"profileId": "p1", "sourceId": 1234567890123456789}, "ms", "sourceId"),
        ({"category": ""}, "ms", "category"),
        ({"reason": "banner"}, "ms", "reason"),
    ],
)
def test_consent_data_reject(changes: dict[str, Any], unit: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        ConsentData.model_validate({**BASE, **changes}, context={"timestamp_unit": unit})


@pytest.mark.parametrize("missing", ["action", "timestamp", "validUntil", "source"])
def test_documented_required_fields(missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        ConsentData.model_validate({key: value for key, value in BASE.items() if key != missing})


def test_unit_defaults_to_documented_milliseconds() -> None:
    ConsentData.model_validate(BASE)
    with pytest.raises(ValidationError):
        ConsentData.model_validate({**BASE, "timestamp": S})


def test_error_body() -> None:
    message = "Required field 'action' is missing or invalid"
    body = ErrorBody.model_validate_json(json.dumps({"error": "Invalid request", "message": message, "n": 1}))
    assert (body.error, body.message) == ("Invalid request", message)
    with pytest.raises(ValidationError):
        ErrorBody.model_validate_json('{"error": "Invalid request"}')

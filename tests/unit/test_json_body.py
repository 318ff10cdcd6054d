"""How a request body is read as JSON before any model sees it: too deep is refused (``body``),
however many arrays and objects lie side by side, and brackets inside strings are text."""

from __future__ import annotations

import json

import pytest

from gateway.http.params import MAX_DEPTH, parse_json
from gateway.refusals import Refusal


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def test_nesting_up_to_the_limit_is_read() -> None:
    assert parse_json(nested(MAX_DEPTH)).value == json.loads(nested(MAX_DEPTH))


def test_one_level_past_the_limit_is_refused_naming_body() -> None:
    with pytest.raises(Refusal) as refused:
        parse_json(nested(MAX_DEPTH + 1))
    assert [error.field for error in refused.value.problem.errors or []] == ["body"]
    assert "deep" in refused.value.problem.detail


def test_many_shallow_objects_side_by_side_are_not_deep() -> None:
    """More openers than the limit, none of them deeper than two: a batch of decisions."""
    body = json.dumps({"decisions": [{"subject": {"id": str(n)}} for n in range(3 * MAX_DEPTH)]}).encode()
    assert len(parse_json(body).value["decisions"]) == 3 * MAX_DEPTH


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"note": "[" * (2 * MAX_DEPTH) + '\\"{' * MAX_DEPTH}).encode()
    assert parse_json(body).value["note"].startswith("[[")


def test_a_deep_value_among_shallow_ones_is_refused() -> None:
    body = b'{"a": [1, 2, {"b": 3}], "c": ' + nested(MAX_DEPTH) + b"}"
    with pytest.raises(Refusal):
        parse_json(body)

"""A ``note`` holds no control character but tab and line breaks: DEL and the C1 range (0x80-0x9f,
NEL among them) are refused like the C0 ones, with a 422 naming ``note``, and nothing is stored."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from schemas.api import RepushIn
from schemas.consent import Decision
from tests.e2e.conftest import ADMIN, DECISION, WRITER, auth, stored_rows

REFUSED = {"del": "\x7f", "c1-first": "\x80", "nel": "\x85", "c1-last": "\x9f"}
KEPT = {"tab": "\t", "line-feed": "\n", "carriage-return": "\r", "nbsp": "\xa0"}


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [error["field"] for error in response.json()["errors"]]


def documented_pattern(model: type[Any]) -> str:
    """The pattern the OpenAPI document gives for ``note``."""
    note = model.model_json_schema()["properties"]["note"]
    [pattern] = [part["pattern"] for part in note.get("anyOf", [note]) if "pattern" in part]
    return str(pattern)


@pytest.mark.parametrize("char", REFUSED.values(), ids=REFUSED.keys())
async def test_a_note_with_del_or_a_c1_control_is_refused(client: httpx.AsyncClient, char: str) -> None:
    response = await client.post("/v1/consents", json={**DECISION, "note": f"signup{char}form"}, headers=auth(WRITER))
    assert response.status_code == 422 and problem_fields(response) == ["note"], response.text
    assert await stored_rows(client) == 0


@pytest.mark.parametrize("char", REFUSED.values(), ids=REFUSED.keys())
async def test_a_repush_note_with_del_or_a_c1_control_is_refused(client: httpx.AsyncClient, char: str) -> None:
    assert (await client.post("/v1/consents", json=DECISION, headers=auth(WRITER))).status_code == 202
    response = await client.post("/v1/subjects/cust-42/repush", json={"note": f"a{char}b"}, headers=auth(ADMIN))
    assert response.status_code == 422 and problem_fields(response) == ["note"], response.text


@pytest.mark.parametrize("char", KEPT.values(), ids=KEPT.keys())
async def test_a_note_keeps_tabs_line_breaks_and_other_text(client: httpx.AsyncClient, char: str) -> None:
    note = f"signup{char}form"
    response = await client.post("/v1/consents", json={**DECISION, "note": note}, headers=auth(WRITER))
    assert response.status_code == 202, response.text
    assert response.json()["decision"]["note"] == note


@pytest.mark.parametrize("model", [Decision, RepushIn])
def test_the_documented_note_pattern_refuses_exactly_what_validation_refuses(model: type[Any]) -> None:
    pattern = re.compile(documented_pattern(model))
    for code in range(0xA1):
        char = chr(code)
        controlled = unicodedata.category(char) == "Cc" and char not in "\t\n\r"
        assert (pattern.fullmatch(f"a{char}b") is None) is controlled, hex(code)
        body = {**DECISION, "note": f"a{char}b"} if model is Decision else {"note": f"a{char}b"}
        try:
            model.model_validate_json(json.dumps(body))
        except ValidationError as error:
            assert controlled and [e["loc"] for e in error.errors()] == [("note",)], (hex(code), error)
        else:
            assert not controlled, hex(code)

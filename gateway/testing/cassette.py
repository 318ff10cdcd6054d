"""The cassette file format: one JSON file per scenario, interactions in the order they happened.

Written with sorted keys, an indent of 2 and a final newline, so a re-recording that changes
nothing changes no byte, and one that changes something shows as a small diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VERSION = 1
Failure = Literal["timeout", "connect"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordedRequest(_Model):
    """A request as the provider received it, its path relative to the provider's base URL."""

    method: str
    path: str
    query: list[tuple[str, str]] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None  # decoded JSON
    text: str | None = None  # a body that is not JSON


class RecordedResponse(_Model):
    status: int
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    text: str | None = None


class Interaction(_Model):
    """One exchange: a response, or the transport error that took its place."""

    request: RecordedRequest
    response: RecordedResponse | None = None
    error: Failure | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Interaction:
        if (self.response is None) == (self.error is None):
            raise ValueError("an interaction has either a response or an error")
        return self


class Cassette(_Model):
    version: int = VERSION
    provider: str
    description: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)  # non-secret provider settings it was recorded with
    volatile: list[str] = Field(default_factory=list)  # request body fields left out of matching
    interactions: list[Interaction] = Field(default_factory=list)

    def dumps(self) -> str:
        """The canonical text: the same cassette always gives the same bytes."""
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, text: str) -> Cassette:
        return cls.model_validate_json(text)

    @classmethod
    def load(cls, path: Path) -> Cassette:
        return cls.loads(path.read_text(encoding="utf-8"))

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dumps(), encoding="utf-8")

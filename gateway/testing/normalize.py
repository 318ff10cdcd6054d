"""Deterministic recordings: ids and times the provider made up get stand-ins.

Only values first seen in a response are replaced (a Wix consent id, its createdDate); what the
client sent (a subject id, the decision's time) is kept even when the provider echoes it. A
stand-in is numbered by first appearance and keeps the original's shape (a UUID stays a UUID, a
timestamp a timestamp), so an adapter parsing it still can, and the same value is replaced by the
same stand-in everywhere after, requests included (``PATCH …/{id}``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.testing.cassette import Interaction

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _uuid(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def _timestamp(number: int) -> str:
    return (EPOCH + timedelta(seconds=number)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


KINDS: tuple[tuple[re.Pattern[str], Callable[[int], str]], ...] = ((UUID, _uuid), (TIMESTAMP, _timestamp))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    return []


class Normalizer:
    """Normalizes one recording's interactions, in order."""

    def __init__(self) -> None:
        self._sent: set[str] = set()
        self._stand_ins: dict[str, str] = {}
        self._counts = [0] * len(KINDS)

    def _replace(self, value: Any) -> Any:
        if isinstance(value, str):
            for original, stand_in in self._stand_ins.items():
                value = value.replace(original, stand_in)
            return value
        if isinstance(value, list):
            return [self._replace(item) for item in value]
        if isinstance(value, dict):
            return {key: self._replace(item) for key, item in value.items()}
        return value

    def _made_up(self, value: Any) -> None:
        """Give a stand-in to each id or time in ``value`` the client never sent."""
        for text in _strings(value):
            for index, (pattern, stand_in) in enumerate(KINDS):
                for found in pattern.findall(text):
                    if found not in self._sent and found not in self._stand_ins:
                        self._counts[index] += 1
                        self._stand_ins[found] = stand_in(self._counts[index])

    def interaction(self, interaction: Interaction) -> Interaction:
        request = interaction.request
        self._sent.update(
            found
            for text in _strings([request.path, request.query, request.body, request.text])
            for pattern, _ in KINDS
            for found in pattern.findall(text)
        )
        response = interaction.response
        if response is not None:
            self._made_up([response.body, response.text, response.headers])
        return Interaction.model_validate(self._replace(interaction.model_dump(mode="json")))

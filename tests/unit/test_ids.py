"""Row ids (``gateway.store.ids``): UUIDs of version 7, in the order they were made, never repeated."""

from __future__ import annotations

import uuid

import pytest

from gateway.store import ids


def test_an_id_is_a_version_7_uuid_starting_with_its_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_796_000_000_123_456_789)
    made = ids.new_id()
    found = uuid.UUID(made)
    assert str(found) == made
    assert (found.version, found.variant) == (7, uuid.RFC_4122)
    assert found.int >> 80 == 1_796_000_000_123


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    for millisecond in range(1_796_000_000_000, 1_796_000_000_000 + 300, 3):
        monkeypatch.setattr(ids.time, "time_ns", lambda ms=millisecond: ms * 1_000_000)
        made.append(ids.new_id())
    assert made == sorted(made)


def test_ids_made_in_one_millisecond_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_796_000_000_000_000_000)
    made = {ids.new_id() for _ in range(10_000)}
    assert len(made) == 10_000
    assert all(uuid.UUID(each).variant == uuid.RFC_4122 for each in made)

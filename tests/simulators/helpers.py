"""Test helpers shared by the simulator tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

ClientFactory = Callable[..., httpx.AsyncClient]


class FakeClock:
    """A settable clock, so token expiry and "now" are tested without sleeping."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now

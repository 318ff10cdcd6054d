"""A worker's periodic jobs in one loop: reconciliation runs, due expiries, erasures to finish."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

log = structlog.get_logger("consent_gateway.chores")
Step = Callable[[], Awaitable[bool]]


class Chores:
    """Runs each step in turn; a step answers whether it found work. When none did, the loop
    waits ``poll_s``; a failing step is logged and the loop goes on (a store hiccup must not end it)."""

    def __init__(self, steps: Sequence[Step], poll_s: float, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.steps = list(steps)
        self.poll_s = poll_s
        self.sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chores")

    async def stop(self) -> None:
        """A run stopped mid-way keeps its cursor: its lease runs out and a worker resumes it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            busy = False
            for step in self.steps:
                try:
                    busy = await step() or busy
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("chore_failed", chore=getattr(step, "__qualname__", repr(step)))
            if not busy:
                await self.sleep(self.poll_s)

"""People who leave: an erasure removes the person at every provider, then from the store.

The store records the erasure with its removals in one transaction (``gateway.store.erasures``);
the worker pushes the removals like any delivery; once every one succeeded, this chore has the
store scrub the person's data, and on SQLite takes what the scrub overwrote off the disk too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import structlog

from adapters.base import Adapter
from gateway.metrics import Metrics
from gateway.store import Store
from schemas.api import ErasureOut

log = structlog.get_logger("consent_gateway.erasure")


class Erasures:
    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        purposes: Sequence[str],
        clock: Callable[[], datetime],
        wake: Callable[[], None],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.metrics = metrics
        self.purposes = list(purposes)
        self.clock = clock
        self.wake = wake
        self.unflushed = False  # a scrub committed that SQLite's write-ahead log may still hold

    async def request(self, subject_id: str, requested_by: str) -> tuple[ErasureOut, bool] | None:
        """The subject's erasure, and whether this call started it (an erased subject answers its
        latest erasure again); None for a subject never recorded."""
        found = await self.store.erasures.request(subject_id, requested_by, self.adapters, self.purposes, self.clock())
        if found is not None and found[1]:
            log.info("erasure_requested", subject=subject_id, erasure=found[0].id, requested_by=requested_by)
            self.metrics.erasures.labels("requested").inc()
            self.wake()
        return found

    async def get(self, erasure_id: str) -> ErasureOut | None:
        return await self.store.erasures.get(erasure_id)

    async def step(self) -> bool:
        """Finish the oldest erasure whose removals all succeeded; whether there was one."""
        finished = await self.store.erasures.finish_next(self.clock())
        if finished is not None:
            log.info("subject_erased", subject=finished[1], erasure=finished[0])
            self.metrics.erasures.labels("completed").inc()
            self.unflushed = True
        await self._flush()
        return finished is not None

    async def _flush(self) -> None:
        """What the scrub overwrote, off the disk too (SQLite's log); retried at the next step
        while a reader holds the log."""
        if self.unflushed:
            self.unflushed = not await self.store.erasures.flush()
            if self.unflushed:
                log.warning("erasure_flush_deferred", reason="a reader holds SQLite's write-ahead log")

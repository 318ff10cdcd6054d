"""Backfills: every live subject's state pushed to a provider that was just enabled or lost its data.

A backfill is queued (API, CLI) and driven step by step: by a worker's chores, or by the CLI in its
own process. A step tops the backfill's deliveries that are not final yet up to
``backfill.max_outstanding`` (so 100,000 subjects never fill the outbox at once) a chunk at a time,
and finishes it once every subject was enqueued and every push is final. The worker sends the
pushes within the provider's concurrency and request budget as always; since what the provider
held was forgotten, each is a first sync (sent in bulk where the adapter offers that).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from adapters.base import Adapter
from gateway.clock import Clock
from gateway.config import BackfillSettings
from gateway.store import Store
from gateway.store.backfills import Leased, LeaseLost
from gateway.store.db import store_busy
from schemas.api import BackfillOut, BackfillPreview, RunStatus

log = structlog.get_logger("consent_gateway.backfill")
Progress = Callable[[BackfillOut], None]
FINISHED = (RunStatus.done, RunStatus.failed)


class Deliverer(Protocol):
    """The worker sending the pushes: woken when some are queued, and watched for their outcomes."""

    def wake(self) -> None: ...

    async def wait_for_change(self, timeout: float) -> None: ...


class Backfiller:
    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        settings: BackfillSettings,
        clock: Clock,
        deliverer: Deliverer,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.settings = settings
        self.clock = clock
        self.deliverer = deliverer
        self.owner = str(uuid.uuid4())  # this driver's leases

    async def preview(self, provider: str) -> BackfillPreview:
        """What a backfill would push now (a dry run): read chunk by chunk, nothing written."""
        adapter, snapshots = self.adapters[provider], self.store.snapshots
        subjects = mapped = 0
        after: str | None = None
        while ids := await snapshots.subject_ids(after, self.settings.chunk):
            states = (await snapshots.states(ids)).values()
            subjects += len(states)
            mapped += sum(1 for state in states if adapter.project(state))
            after = ids[-1]
        return BackfillPreview(provider=provider, subjects=subjects, mapped=mapped, nothing=subjects - mapped)

    async def ask(self, provider: str) -> tuple[BackfillOut, bool]:
        """Queue a backfill, or join the provider's one not finished yet (False)."""
        return await self.store.backfills.ask(provider, await self.store.snapshots.count(), self.clock())

    async def step(self, backfill_id: str | None = None) -> bool:
        """Advance every backfill this driver may (or only ``backfill_id``); whether any push was queued."""
        claimed = await self.store.backfills.claim(
            self.owner, list(self.adapters), self.clock(), self.settings.lease_s, backfill_id
        )
        queued = False
        for backfill in claimed:
            queued = await self._advance(backfill) or queued
        return queued

    async def drive(self, backfill_id: str, progress: Progress | None = None) -> BackfillOut:
        """Drive one backfill to its end here (the CLI, with its own worker delivering); a stop gives
        its lease up, so the next driver resumes it at once."""
        try:
            while True:
                await self.step(backfill_id)
                found = await self.store.backfills.get(backfill_id)
                assert found is not None, "a backfill is never deleted"
                if progress is not None:
                    progress(found)
                if found.status in FINISHED:
                    return found
                await self.deliverer.wait_for_change(0.5)
        finally:
            await asyncio.shield(self.store.backfills.release(backfill_id, self.owner, self.clock()))

    async def _advance(self, backfill: Leased) -> bool:
        try:
            return await self._fill(backfill)
        except LeaseLost:
            return False
        except Exception as error:
            if store_busy(error):  # nothing was written: the next step tries again
                raise
            log.exception("backfill_failed", backfill=backfill.id, provider=backfill.provider)
            await self.store.backfills.finish(backfill.id, RunStatus.failed, self.clock(), type(error).__name__)
            return False

    async def _fill(self, backfill: Leased) -> bool:
        """Queue pushes chunk by chunk while fewer than ``max_outstanding`` of its own are not final;
        once every subject was queued and every push is final, it is done."""
        backfills, settings = self.store.backfills, self.settings
        room = settings.max_outstanding - await backfills.outstanding(backfill.id)
        cursor, queued = backfill.cursor, False
        while room > 0:
            ids = await self.store.snapshots.subject_ids(cursor, min(settings.chunk, room))
            if not ids:
                if not await backfills.outstanding(backfill.id):
                    await backfills.finish(backfill.id, RunStatus.done, self.clock())
                    log.info("backfill_done", backfill=backfill.id, provider=backfill.provider)
                break
            added = await backfills.enqueue(backfill, self.owner, ids, self.adapters, self.clock(), settings.lease_s)
            log.info("backfill_chunk", backfill=backfill.id, provider=backfill.provider, queued=added, read=len(ids))
            cursor, room = ids[-1], room - added
            if added:
                queued = True
                self.deliverer.wake()
        return queued

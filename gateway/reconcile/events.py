"""Provider events, acted on: a change a provider announced (a Wix webhook) goes through exactly the
rules of a read-back that found it (``Reconciler.act``: provenance, plausible time, shared addresses,
the provider's drift policy), for every subject holding the address it is about.

Runs in a worker process, after the API stored the event and answered the provider. An event is
left queued while a push to that provider is under way for one of its subjects (the push will
change what the provider holds; the event is judged once that push is known). A record's older
revision never wins over a newer one already seen, whatever order they arrive in; a deletion or an
anonymization is stored as what the provider holds (the row shows it) and reported, never adopted.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from adapters.base import Observation, ProviderEvent
from gateway.reconcile.runner import Reader, Reconciler
from gateway.rules.drift import Known
from gateway.store.events import Queued
from schemas.api import EventStatus

log = structlog.get_logger("consent_gateway.events")

Verdict = tuple[EventStatus, str] | None  # None: not now (a push under way), the event stays queued


class EventLoop:
    """Claims queued events and acts on them; woken by the API when it stores one (same process),
    else it looks every ``poll_s``."""

    def __init__(self, reconciler: Reconciler, reader: Reader, *, batch: int = 50) -> None:
        self.reconciler = reconciler
        self.reader = reader
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="provider-events")

    async def stop(self) -> None:
        """An event being acted on keeps its lease: another worker takes it when the lease runs out."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        poll_s = self.reconciler.settings.reconcile.poll_s
        while True:
            self._wake.clear()
            try:
                busy = await self.step()
            except Exception:  # a store hiccup must not end the loop
                log.exception("provider_events_failed")
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(self._wake.wait(), poll_s)
                except TimeoutError:
                    pass

    async def step(self) -> bool:
        """Act on the due events, oldest first; whether there were any."""
        reconciler = self.reconciler
        lease_s = reconciler.settings.reconcile.lease_s
        claimed = await reconciler.store.events.claim(reconciler.clock(), lease_s, self.batch)
        for queued in claimed:
            await self.apply(queued)
        return bool(claimed)

    async def apply(self, queued: Queued) -> None:
        reconciler, event, provider = self.reconciler, queued.event, queued.provider
        verdict = await self._verdict(queued)
        now = reconciler.clock()
        if verdict is None:
            later = now + timedelta(seconds=reconciler.settings.reconcile.poll_s)
            await reconciler.store.events.later(provider, event.id, later)
            return
        status, outcome = verdict
        await reconciler.store.events.close(provider, event.id, status, outcome, now)
        reconciler.metrics.events.labels(provider, status.value).inc()
        report = log.warning if status is EventStatus.reported else log.info
        fields = {"provider": provider, "event_id": event.id, "entity": event.entity_id}
        report("provider_event", **fields, status=status.value, outcome=outcome)

    async def _verdict(self, queued: Queued) -> Verdict:
        reconciler, event, provider = self.reconciler, queued.event, queued.provider
        adapter = reconciler.adapters.get(provider)
        if adapter is None:
            return EventStatus.ignored, f"{provider} is no longer configured"
        newest = await reconciler.store.events.newest_version(provider, event.entity_id)
        if event.version is not None and newest is not None and event.version <= newest:
            return EventStatus.ignored, f"revision {event.version} is not newer than revision {newest}, seen before"
        why = _reported(event, provider)
        if event.term is None or event.address is None:
            return (EventStatus.reported, f"{why}; which address it held is not said") if why else _unaddressed()
        field = adapter.addressed().get(event.term)
        if field is None or event.term not in adapter.settings.purposes.values():
            return EventStatus.ignored, f"{event.term} is mapped to no purpose here"
        holders = await reconciler.store.events.holders(field, event.address)
        if not holders:
            return EventStatus.ignored, "no subject holds that address"
        chunk = await reconciler.snapshots.chunk(holders)
        if any((subject, provider) in chunk.under_way for subject in holders):
            return None
        seen = {subject: _observed(chunk.known.get((subject, provider), Known()), event) for subject in holders}
        await reconciler.store.observations.save(None, {(s, provider): o for s, o in seen.items()}, reconciler.clock())
        if why:
            return EventStatus.reported, f"{why}: never adopted ({len(holders)} subject(s) hold that address)"
        return await self._act(provider, seen)

    async def _act(self, provider: str, seen: dict[str, Observation]) -> tuple[EventStatus, str]:
        chunk, act = await self.reconciler.snapshots.chunk(sorted(seen)), self.reconciler.act
        done = {subject: await act(chunk, subject, provider, held, self.reader) for subject, held in seen.items()}
        if not any(done.values()):
            return EventStatus.ignored, "what it holds is what the gateway wants (its own write, or in sync)"
        said = (f"{subject}: {', '.join(what) or 'in sync'}" for subject, what in done.items())
        return EventStatus.applied, "; ".join(said)


def _reported(event: ProviderEvent, provider: str) -> str | None:
    """Why an event is only reported: a deletion or an anonymization says nobody's decision."""
    if event.anonymized:
        return f"anonymized at {provider} (a person's erasure request there)"
    return f"deleted at {provider}" if event.deleted else None


def _unaddressed() -> tuple[EventStatus, str]:
    return EventStatus.ignored, "the event names no address this gateway keeps"


def _observed(known: Known, event: ProviderEvent) -> Observation:
    """What the provider holds for one subject after the event: what the gateway last knew it held
    (acknowledged, or read back), with the event's term as the event says it now is."""
    base = known.newest() or {}
    times = dict(known.changed_at) if known.read_last else {}
    held = {term: value for term, value in base.items() if term != event.term} | event.held
    changed_at = {term: moment for term, moment in times.items() if term != event.term and term in held}
    if event.held and event.changed_at is not None:
        changed_at[event.term or ""] = event.changed_at
    return Observation(held=held, changed_at=changed_at)

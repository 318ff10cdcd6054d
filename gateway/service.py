"""The gateway as one object: settings, store, adapters and worker, wired together."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx
import structlog

from adapters.base import Adapter, EventSource, UnreadableEvent, Unverified
from gateway.clock import Clock, utcnow
from gateway.config import Settings, build_adapters
from gateway.delivery.worker import Worker
from gateway.lifecycle.chores import Chores
from gateway.lifecycle.erasure import Erasures
from gateway.lifecycle.expiry import Expiries
from gateway.metrics import Metrics
from gateway.reconcile.backfill import Backfiller
from gateway.reconcile.events import EventLoop
from gateway.reconcile.runner import NotAdoptable, Reconciler, RunLoop
from gateway.refusals import Refusal, bad_parameter, erased, not_found
from gateway.store import Store
from gateway.store.grouping import GroupCommit
from gateway.store.idempotency import Binding
from gateway.store.ledger import Pending, SubjectErased
from gateway.store.ratelimit import Sleep
from schemas.api import (
    BackfillOut,
    BackfillPreview,
    DecisionOut,
    DeliveryOut,
    DeliveryStatus,
    ErasureOut,
    EventOut,
    EventsReceived,
    RunOut,
    SubjectOut,
)
from schemas.consent import Decision, decision_context

log = structlog.get_logger("consent_gateway.gateway")
RECORD_YIELDS = 2
"""Loop turns the record path's group commit gives before writing a group, so requests already read
join it: without them, under load, a third to half of the groups held 4 decisions or fewer, and a group
costs ~1 ms of its own whatever its size (``python -m benchmarks groups``)."""


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store or Store.from_url(settings.database_url, settings.pool())
        self.adapters = dict(adapters if adapters is not None else build_adapters(settings))
        self.metrics = Metrics()
        self.worker = Worker(
            self.store, self.adapters, settings, transports=transports, clock=clock, sleep=sleep, metrics=self.metrics
        )
        self.recorder: GroupCommit[Pending, DecisionOut] = GroupCommit(
            self._record_group, self.worker.wake, name="decisions", yields=RECORD_YIELDS
        )
        self.reconciler = Reconciler(self.store, self.adapters, settings, clock, self.metrics)
        self.runs = RunLoop(self.reconciler, self.worker)
        self.expiries = Expiries(self.store, self.adapters, clock, self.worker.wake, self.metrics)
        self.erasures = Erasures(self.store, self.adapters, settings.purposes, clock, self.worker.wake, self.metrics)
        self.events = EventLoop(self.reconciler, self.worker)
        self.backfiller = Backfiller(self.store, self.adapters, settings.backfill, clock, self.worker)
        refresh = self.reconciler.refresher.step  # the drift view's stored rows
        steps = [self.runs.step, self.expiries.step, self.erasures.step, self.backfiller.step, refresh]
        self.chores = Chores(steps, settings.reconcile.poll_s, sleep)

    async def start(self, *, run_worker: bool | None = None, migrate: bool = False) -> None:
        """Check (or, with ``migrate``, upgrade) the schema, then start the worker if asked to."""
        if migrate:
            await self.store.upgrade()
        else:
            await self.store.require_current()
        for name, adapter in self.adapters.items():
            for caution in adapter.cautions():
                log.warning("provider_setting_loses_data", provider=name, caution=caution)
        if self.settings.worker.enabled if run_worker is None else run_worker:
            self.worker.start()
            self.chores.start()
            self.events.start()

    async def stop(self) -> None:
        await self.events.stop()
        await self.chores.stop()
        await self.worker.stop()
        await self.store.close()

    def secrets(self) -> list[str]:
        return [secret for adapter in self.adapters.values() for secret in adapter.secrets()]

    def decision_context(self) -> dict[str, Any]:
        """Validation context for a caller's decision: the purpose vocabulary and the clock now."""
        return decision_context(self.settings.purposes, self.clock(), self.settings.max_clock_skew_s)

    async def _record_group(self, group: Sequence[Pending]) -> list[DecisionOut]:
        return await self.store.ledger.record_many(group, self.adapters, self.clock())

    async def record(self, decision: Decision, binding: Binding | None = None) -> DecisionOut:
        """Record ``decision`` (with the others arriving meanwhile: group commit); with a
        ``binding``, at most once per idempotency key and item."""
        [outcome] = await self.record_all([(decision, binding)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def record_all(self, items: Sequence[tuple[Decision, Binding | None]]) -> list[DecisionOut | BaseException]:
        """``record`` for a batch, handed over at once: each item's decision as recorded, or what refused
        it (SubjectErased); each counted by outcome."""
        outcomes = await self.recorder.commit_all([Pending(decision, binding) for decision, binding in items])
        recorded = [each for each in outcomes if isinstance(each, DecisionOut)]
        superseded = sum(bool(each.superseded_purposes and not each.effective_purposes) for each in recorded)
        counts = {
            "rejected": sum(isinstance(each, SubjectErased) for each in outcomes),
            "superseded": superseded,
            "accepted": len(recorded) - superseded,
        }
        for outcome, count in counts.items():
            if count:  # a series' labels cost more than its increment: skip the zeros
                self.metrics.decisions.labels(outcome).inc(count)
        return outcomes

    async def wait_until_final(self, decision_id: str, timeout: float) -> DecisionOut:
        """The decision once every delivery is final, or as it stands when ``timeout`` runs out.

        Polls the store too, so it also sees deliveries finished by a worker in another process.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            statuses = await self.store.ledger.decision_statuses(decision_id)
            remaining = deadline - loop.time()
            if all(status.final for status in statuses) or remaining <= 0:
                break
            await self.worker.wait_for_change(min(remaining, 0.25))
        found = await self.store.ledger.decision(decision_id)
        assert found is not None
        return found

    async def subject(self, subject_id: str) -> SubjectOut | None:
        """The subject's merged state and its reconciliation row at each provider."""
        state = await self.store.ledger.subject_state(subject_id)
        if state is None:
            return None
        return SubjectOut(state=state, providers=await self.reconciler.rows([subject_id]))

    # -- what a person can do: one rule set, which the API, the admin page and the CLI translate --

    async def shown_subject(self, subject_id: str) -> SubjectOut:
        """The subject as a reader sees it: 404 unknown, 410 erased (its history stays, scrubbed)."""
        found = await self.subject(subject_id)
        if found is None:
            raise no_subject()
        if found.state.erased_at is not None:
            raise erased(f"erased at {found.state.erased_at.isoformat()}", "subject_id", 410)
        return found

    async def history(self, subject_id: str, limit: int) -> list[DecisionOut]:
        """The subject's ledger, newest first: 404 unknown, 410 erased (unless re-created since)."""
        items = await self.store.ledger.history(subject_id, limit)
        if not items:
            raise no_subject()
        if items[0].decision.source == "erasure":  # the newest entry: nothing was recorded since (re-created)
            raise erased(f"erased at {items[0].received_at.isoformat()}", "subject_id", 410)
        return items

    async def decision(self, decision_id: str) -> DecisionOut:
        found = await self.store.ledger.decision(decision_id)
        if found is None:
            raise not_found("decision")
        return found

    async def start_run(self, providers: Collection[str] | None, subjects: list[str] | None) -> tuple[RunOut, bool]:
        """Queue a read-back run, or join the same one already queued (False)."""
        readable = self.reconciler.observable()
        unknown = sorted(set(providers or ()) - set(readable))
        if unknown:
            message = f"cannot be read back: {', '.join(unknown)}; readable: {', '.join(readable) or 'none'}"
            raise bad_parameter("providers", message, 422)
        run, created = await self.reconciler.ask(providers, subjects)
        if run is None:
            limit, wait = self.settings.reconcile.max_queued, math.ceil(self.settings.reconcile.poll_s)
            detail = f"{limit} runs asked for are still queued: wait for one to start"
            raise Refusal(429, "too-many-runs", "Too many runs queued", detail, headers={"Retry-After": str(wait)})
        return run, created

    async def preview_backfill(self, provider: str) -> BackfillPreview:
        """What a backfill of ``provider`` would push (a dry run): nothing changes."""
        return await self.backfiller.preview(self._configured(provider))

    async def start_backfill(self, provider: str) -> tuple[BackfillOut, bool]:
        """Queue a backfill of ``provider`` (a worker drives it), or join its unfinished one (False)."""
        return await self.backfiller.ask(self._configured(provider))

    async def backfill(self, backfill_id: str) -> BackfillOut:
        found = await self.store.backfills.get(backfill_id)
        if found is None:
            raise not_found("backfill")
        return found

    def _configured(self, provider: str) -> str:
        """``provider``, or a 404 naming it and the configured ones."""
        if provider not in self.adapters:
            raise not_found(
                "provider", f"{provider} is not configured; configured: {', '.join(self.adapters) or 'none'}"
            )
        return provider

    async def repush(self, subject_id: str, providers: Collection[str] | None, note: str) -> DecisionOut:
        """Push the subject again to ``providers`` (default: all), whatever they acknowledged."""
        unknown = sorted(set(providers or ()) - set(self.adapters))
        if unknown:
            configured = ", ".join(self.adapters) or "none"
            raise bad_parameter("providers", f"not configured: {', '.join(unknown)}; configured: {configured}", 422)
        if not self.adapters:  # a repair entry that pushes nowhere would only clutter the ledger
            raise bad_parameter("providers", "no provider is configured: there is nowhere to push", 422)
        try:
            entry = await self.reconciler.repush(subject_id, providers or list(self.adapters), note)
        except SubjectErased as refused:
            raise erased(str(refused)) from None
        if entry is None:
            raise no_subject()
        self.worker.wake()
        return entry

    async def adopt(self, subject_id: str, provider: str) -> DecisionOut:
        """Adopt what ``provider`` was last read to hold as the person's decision now."""
        self._configured(provider)
        if await self.store.ledger.subject_state(subject_id) is None:
            raise no_subject()
        try:
            entry = await self.reconciler.adopt(subject_id, provider)
        except SubjectErased as refused:
            raise erased(str(refused)) from None
        except NotAdoptable as refused:
            raise Refusal(409, "not-adoptable", "Not the person's change", str(refused)) from None
        if entry is None:
            detail = (
                f"{provider} was never read back for this subject, or holds no purpose state other than the gateway's"
            )
            raise Refusal(409, "nothing-to-adopt", "Nothing to adopt", detail)
        self.worker.wake()
        return entry

    async def erase(self, subject_id: str, requested_by: str) -> tuple[ErasureOut, bool]:
        """Erase the person: removal at every provider, then their data out of the store. The erasure,
        and whether this call started it (an erased subject answers its latest erasure again)."""
        found = await self.erasures.request(subject_id, requested_by)
        if found is None:
            raise no_subject()
        return found

    async def erasure(self, erasure_id: str) -> ErasureOut:
        found = await self.erasures.get(erasure_id)
        if found is None:
            raise not_found("erasure")
        return found

    async def retry(self, delivery_id: str) -> DeliveryOut:
        """Try a pending or retrying delivery now instead of at its ladder step."""
        found = await self.delivery(delivery_id)
        if not await self.store.outbox.retry_now(found.id, self.clock()):
            detail = f"this one is {found.status}; only pending or retrying ones wait for a retry"
            raise Refusal(409, "not-waiting", "Nothing to retry", detail)
        self.worker.wake()
        return await self.delivery(delivery_id)

    async def replay(self, delivery_id: str) -> DeliveryOut:
        """Send a dead delivery again; the subject's newest state is what is sent."""
        found = await self.delivery(delivery_id)
        if found.status is not DeliveryStatus.dead:
            raise Refusal(409, "not-dead", "Only dead deliveries can be replayed", f"this one is {found.status}")
        await self.store.outbox.replay(self.clock(), delivery_id=found.id)
        self.worker.wake()
        return await self.delivery(delivery_id)

    async def receive_events(self, provider: str, body: bytes, headers: Mapping[str, str]) -> EventsReceived:
        """Store a provider's events, once each, before its 2xx: what they change is worked out after,
        by the worker (``EventLoop``). A request the provider's adapter cannot verify is a 401 and
        stores nothing."""
        adapter = self._event_source(provider)
        try:
            events = adapter.events(body, headers, self.clock())
        except Unverified as refused:
            self.metrics.events.labels(provider, "refused").inc()
            log.warning("provider_event_refused", provider=provider, reason=str(refused))
            raise Refusal(401, "unverified-event", "Not a verified provider event", str(refused)) from None
        except UnreadableEvent as refused:
            raise bad_parameter("body", str(refused)) from None
        added = await self.store.events.receive(provider, events, self.clock())
        self.metrics.events.labels(provider, "received").inc(added)
        if added:
            self.events.wake()
        return EventsReceived(received=added, duplicates=len(events) - added)

    async def provider_events(self, provider: str, limit: int) -> list[EventOut]:
        """A provider's newest events and what became of them."""
        self._event_source(provider)
        return await self.store.events.recent(provider, limit)

    def _event_source(self, provider: str) -> EventSource:
        adapter = self.adapters.get(provider)
        if not isinstance(adapter, EventSource):
            announcing = ", ".join(name for name, a in self.adapters.items() if isinstance(a, EventSource))
            detail = f"{provider!r} sends no events here; those that do: {announcing or 'none'}"
            raise not_found("provider events", detail)
        return adapter

    async def delivery(self, delivery_id: str) -> DeliveryOut:
        found = await self.store.outbox.get(delivery_id)
        if found is None:
            raise not_found("delivery")
        return found


def no_subject() -> Refusal:
    return not_found("subject", "no decision has been recorded for it")

"""The gateway as one object: settings, store, adapters and worker, wired together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from adapters.base import Adapter
from gateway.chores import Chores
from gateway.config import Settings, build_adapters
from gateway.erasure import Erasures
from gateway.expiry import Expiries
from gateway.grouping import GroupCommit
from gateway.idempotency import Binding
from gateway.ledger import Pending
from gateway.metrics import Metrics
from gateway.ratelimit import Sleep
from gateway.reconcile import Reconciler, RunLoop
from gateway.store import Store
from gateway.worker import Clock, Worker, utcnow
from schemas.api import DecisionOut, SubjectOut
from schemas.consent import Decision, decision_context


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
        self.store = store or Store.from_url(settings.database_url)
        self.adapters = dict(adapters if adapters is not None else build_adapters(settings))
        self.metrics = Metrics()
        self.worker = Worker(
            self.store, self.adapters, settings, transports=transports, clock=clock, sleep=sleep, metrics=self.metrics
        )
        self.recorder = GroupCommit(self.store.ledger, self.adapters, clock, self.worker.wake)
        self.reconciler = Reconciler(self.store, self.adapters, settings, clock)
        self.runs = RunLoop(self.reconciler, self.worker)
        self.expiries = Expiries(self.store.engine, self.adapters, clock, self.worker.wake)
        self.erasures = Erasures(
            self.store.engine, self.store.ledger, self.adapters, settings.purposes, clock, self.worker.wake
        )
        self.chores = Chores([self.runs.step, self.expiries.step, self.erasures.step], settings.reconcile.poll_s, sleep)

    async def start(self, *, run_worker: bool | None = None, migrate: bool = False) -> None:
        """Check (or, with ``migrate``, upgrade) the schema, then start the worker if asked to."""
        if migrate:
            await self.store.upgrade()
        else:
            await self.store.require_current()
        if self.settings.worker.enabled if run_worker is None else run_worker:
            self.worker.start()
            self.chores.start()

    async def stop(self) -> None:
        await self.chores.stop()
        await self.worker.stop()
        await self.store.close()

    def secrets(self) -> list[str]:
        return [secret for adapter in self.adapters.values() for secret in adapter.secrets()]

    def decision_context(self) -> dict[str, Any]:
        """Validation context for a caller's decision: the purpose vocabulary and the clock now."""
        return decision_context(self.settings.purposes, self.clock(), self.settings.max_clock_skew_s)

    async def record(self, decision: Decision, binding: Binding | None = None) -> DecisionOut:
        """Record ``decision`` (with the others arriving meanwhile: group commit); with a
        ``binding``, at most once per idempotency key and item."""
        return await self.recorder.record(Pending(decision, binding))

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

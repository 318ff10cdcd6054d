"""Reconciliation: the drift view (desired vs acknowledged vs observed, per subject × provider),
read-back runs that refresh what providers hold and act on drift by each provider's policy, and
the repairs an admin makes by hand.

Reads go through the worker's lanes (``Reader``): the same client, concurrency limit, request
budget and retries as deliveries. Only ``adapters.base.Observable`` adapters are read.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import httpx
import structlog

from adapters.base import Adapter, Observable, Observation
from adapters.errors import GatewayError, ProviderError
from gateway.clock import Clock
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.reconcile.cells import Cell, cells
from gateway.reconcile.rows import Refresher
from gateway.redaction import redact
from gateway.rules.drift import Known, judge
from gateway.store import Store
from gateway.store.observations import Read
from gateway.store.snapshot import Chunk
from schemas.api import DecisionOut, ProviderSync, ReconciliationPage, RunOut, RunStatus, SyncStatus
from schemas.consent import PurposeState, SubjectState, decision_context, own_decision

log = structlog.get_logger("consent_gateway.reconcile")
T = TypeVar("T")
Progress = Callable[[RunOut], None]


class NotAdoptable(GatewayError):
    """What a provider holds differently is not the person's change there: refused (a 409), nothing recorded."""

    def __init__(self, provider: str, reasons: Mapping[str, str]) -> None:
        listed = "; ".join(f"{term}: {why}" for term, why in sorted(reasons.items()))
        super().__init__(f"{provider} holds nothing to adopt as the person's decision ({listed})")
        self.reasons = dict(reasons)


class Reader(Protocol):
    """Sends a provider's read flow (the worker: its lanes, budgets and retries)."""

    async def read(self, provider: str, flow: Generator[httpx.Request, httpx.Response, T]) -> T: ...

    def wake(self) -> None: ...


class Reconciler:
    def __init__(
        self, store: Store, adapters: Mapping[str, Adapter], settings: Settings, clock: Clock, metrics: Metrics
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.snapshots = store.snapshots
        self.refresher = Refresher(store, adapters, clock, settings.reconcile.chunk)

    def observable(self) -> list[str]:
        return [name for name, adapter in self.adapters.items() if isinstance(adapter, Observable)]

    # -- the drift view ------------------------------------------------------------------

    async def rows(self, subject_ids: Sequence[str], provider: str | None = None) -> list[ProviderSync]:
        """One row per subject × provider, in subject then provider order; from the store only."""
        chunk = await self.snapshots.chunk(subject_ids)
        return await self._render(cells(self.adapters, chunk, subject_ids, provider))

    async def _render(self, cells: Sequence[Cell]) -> list[ProviderSync]:
        last = await self.snapshots.last_deliveries(sorted({cell.state.subject_id for cell in cells}))
        return [cell.row(last.get(cell.pair), self.skew) for cell in cells]

    @property
    def skew(self) -> timedelta:
        """How far past the gateway's clock a time may lie, for a provider's change as for a caller's decision."""
        return timedelta(seconds=self.settings.max_clock_skew_s)

    async def view(
        self,
        *,
        provider: str | None = None,
        status: Collection[SyncStatus] | None = None,
        subject: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ReconciliationPage:
        """A page of rows (filtered), and the count per status (and per provider and status) of
        every row the other filters match: read from the stored rows, with the subjects marked since
        their rows were stored computed live (``gateway.reconcile.rows``); every row computed live
        for one subject, or while too many are marked."""
        after = decode_cursor(cursor) if cursor else None
        live = None if subject is not None else await self.refresher.before_view(self.settings.reconcile.stale_inline)
        if live is None:
            counts, shown, more = await self._walk(provider, status, subject, after, limit)
        else:
            counts, shown, more = await self._stored(provider, status, live, after, limit)
        items = await self._render(shown)
        providers = sorted(self.adapters) if provider is None else [provider]
        return ReconciliationPage(
            items=items,
            counts={s: sum(counts[(name, s)] for name in providers) for s in SyncStatus},
            provider_counts={name: {s: counts[(name, s)] for s in SyncStatus} for name in providers},
            next_cursor=encode_cursor(items[-1]) if more and items else None,
        )

    async def _stored(
        self,
        provider: str | None,
        status: Collection[SyncStatus] | None,
        marked: Sequence[str],
        after: tuple[str, str] | None,
        limit: int,
    ) -> tuple[Counter[tuple[str, SyncStatus]], list[Cell], bool]:
        """The page and counts from the stored rows, the ``marked`` subjects' computed live instead."""
        providers = sorted(self.adapters) if provider is None else [provider]
        fresh = cells(self.adapters, await self.snapshots.chunk(marked), marked, provider)
        stored = await self.store.drift_rows.counts(providers, unless=marked)
        counts = Counter({(name, SyncStatus(found)): n for (name, found), n in stored.items()})
        counts.update((cell.adapter.name, cell.status) for cell in fresh)
        wanted = None if status is None else {s.value for s in status}
        page = await self.store.drift_rows.page(providers, wanted, after, limit + 1, unless=marked)
        computed = {cell.pair: cell for cell in fresh if status is None or cell.status in status}
        pairs = sorted({(s, p) for s, p, _ in page} | {pair for pair in computed if after is None or pair > after})
        more, pairs = len(pairs) > limit, pairs[:limit]
        read = sorted({s for s, p in pairs if (s, p) not in computed})
        for cell in cells(self.adapters, await self.snapshots.chunk(read), read, provider):  # shown: in full, now
            computed.setdefault(cell.pair, cell)
        return counts, [computed[pair] for pair in pairs if pair in computed], more

    async def _walk(
        self,
        provider: str | None,
        status: Collection[SyncStatus] | None,
        subject: str | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> tuple[Counter[tuple[str, SyncStatus]], list[Cell], bool]:
        """The page and counts with every row computed live, walking the subjects chunk by chunk:
        memory stays flat."""
        counts: Counter[tuple[str, SyncStatus]] = Counter()
        shown: list[Cell] = []
        more = False
        async for found in self._all_cells(provider, subject):
            counts.update((cell.adapter.name, cell.status) for cell in found)
            for cell in found:
                if (status is not None and cell.status not in status) or (after is not None and cell.pair <= after):
                    continue
                if len(shown) == limit:
                    more = True
                else:
                    shown.append(cell)
        return counts, shown, more

    async def _all_cells(self, provider: str | None, subject: str | None) -> AsyncIterator[list[Cell]]:
        """Every cell the filters allow, a chunk of subjects at a time."""
        if subject is not None:
            yield cells(self.adapters, await self.snapshots.chunk([subject]), [subject], provider)
            return
        after: str | None = None
        while ids := await self.snapshots.subject_ids(after, self.settings.reconcile.chunk):
            yield cells(self.adapters, await self.snapshots.chunk(ids), ids, provider)
            after = ids[-1]

    # -- read-back runs ------------------------------------------------------------------

    async def start(self, providers: Collection[str] | None, subjects: list[str] | None) -> RunOut:
        """Queue a run; a worker takes it up (``execute``)."""
        chosen = sorted(providers) if providers else self.observable()
        created = await self.store.runs.create(chosen, sorted(subjects) if subjects else None, self.clock())
        assert created is not None, "a fresh run id never collides"
        return created

    async def ask(self, providers: Collection[str] | None, subjects: list[str] | None) -> tuple[RunOut | None, bool]:
        """A run a person asks for: joins the same one still queued; None while
        ``reconcile.max_queued`` of theirs wait (each costs a read of every subject)."""
        chosen = sorted(providers) if providers else self.observable()
        wanted = sorted(set(subjects)) if subjects else None
        return await self.store.runs.ask(chosen, wanted, self.clock(), self.settings.reconcile.max_queued)

    async def execute(self, run: RunOut, reader: Reader, progress: Progress | None = None) -> RunOut:
        """Read the run's providers back chunk by chunk from where it stopped, store what they
        hold, apply each provider's drift policy; a provider failing mid-run fails its rows only."""
        counts: dict[str, Any] = dict(run.counts)
        providers = [name for name in run.providers if isinstance(self.adapters.get(name), Observable)]
        reading: asyncio.Task[tuple[list[str], dict[tuple[str, str], Read]]] | None = None
        try:
            ids = await self._next(run, await self.store.runs.cursor(run.id))
            reading = asyncio.create_task(self._read_chunk(ids, providers, reader)) if ids else None
            while reading is not None:
                read_ids, found = await reading
                ids = await self._next(run, read_ids[-1])
                # the next chunk is read while this one is settled: the providers are never kept idle
                reading = asyncio.create_task(self._read_chunk(ids, providers, reader)) if ids else None
                await self._settle(run.id, read_ids, found, reader, counts)
                counts["subjects"] = counts.get("subjects", 0) + len(read_ids)
                lease = self.settings.reconcile.lease_s
                await self.store.runs.progress(run.id, read_ids[-1], counts, self.clock(), lease)
                if progress is not None:
                    progress(run.model_copy(update={"counts": dict(counts)}))
        except BaseException as error:
            if reading is not None:
                reading.cancel()
            if isinstance(error, Exception):  # not a stop: the run failed (a stopped one is resumed)
                log.exception("reconciliation_run_failed", run=run.id)
                await self.store.runs.finish(run.id, RunStatus.failed, self.clock(), f"{type(error).__name__}")
                self._count(RunStatus.failed, counts, providers)
            raise
        await self.store.runs.finish(run.id, RunStatus.done, self.clock())
        self._count(RunStatus.done, counts, providers)
        finished = await self.store.runs.get(run.id)
        assert finished is not None
        return finished

    def _count(self, status: RunStatus, counts: Mapping[str, Any], providers: Sequence[str]) -> None:
        self.metrics.runs.labels(status.value).inc()
        for provider in providers:
            for outcome, rows in (counts.get(provider) or {}).items():
                self.metrics.run_rows.labels(provider, outcome).inc(rows)

    async def _next(self, run: RunOut, after: str | None) -> list[str]:
        size = self.settings.reconcile.chunk
        if run.subjects is None:
            return await self.snapshots.subject_ids(after, size)
        return [subject for subject in run.subjects if after is None or subject > after][:size]

    async def _read_chunk(
        self, ids: list[str], providers: list[str], reader: Reader
    ) -> tuple[list[str], dict[tuple[str, str], Read]]:
        states = list((await self.snapshots.states(ids)).values())
        found: dict[tuple[str, str], Read] = {}
        await asyncio.gather(*(self._read(name, states, reader, found) for name in providers))
        return ids, found

    async def _settle(
        self, run_id: str, ids: list[str], found: dict[tuple[str, str], Read], reader: Reader, counts: dict[str, Any]
    ) -> None:
        """Store what was read, and apply the providers' policies to the rows read."""
        await self.store.observations.save(run_id, found, self.clock())
        chunk = await self.snapshots.chunk(ids)
        for (subject_id, name), result in sorted(found.items()):
            tally = counts.setdefault(name, {"read": 0, "unreadable": 0, "diverged": 0, "adopted": 0, "repushed": 0})
            if isinstance(result, str):
                tally["unreadable"] += 1
                continue
            tally["read"] += 1
            for outcome in await self.act(chunk, subject_id, name, result, reader):
                tally[outcome] += 1

    async def _read(
        self, provider: str, states: list[SubjectState], reader: Reader, found: dict[tuple[str, str], Read]
    ) -> None:
        adapter = self.adapters[provider]
        assert isinstance(adapter, Observable)
        size = adapter.read_batch
        batches = [states[start : start + size] for start in range(0, len(states), size)]

        async def one(batch: list[SubjectState]) -> None:
            try:
                observed = await reader.read(provider, adapter.read(batch))
            except ProviderError as error:  # the rows say why; the run goes on
                reason = redact(f"read failed: {error}", self.adapters[provider].secrets())
                found.update({(state.subject_id, provider): reason for state in batch})
                return
            found.update({(subject_id, provider): seen for subject_id, seen in observed.items()})

        await asyncio.gather(*(one(batch) for batch in batches))

    async def act(self, chunk: Chunk, subject_id: str, provider: str, seen: Observation, reader: Reader) -> list[str]:
        """The provider's drift policy on one row just read back, or just announced by the provider
        (an event); what it did."""
        adapter = self.adapters[provider]
        state = chunk.states.get(subject_id)
        pair = (subject_id, provider)
        if state is None or seen.held == adapter.project(state) or pair in chunk.under_way:
            return []  # in sync, or a push under way will change what it holds anyway
        done = ["diverged"]
        policy = adapter.settings.drift_policy
        if policy == "report_only":
            return done
        kept: set[str] = set()
        if policy == "newest_wins":
            judged = judge(adapter, state, seen, chunk.known.get(pair, Known()).writes, self.clock(), self.skew)
            kept = judged.kept
            for when, purposes in sorted(judged.decisions.items()):
                await self.adopt_decision(subject_id, provider, purposes, when, seen)
                done.append("adopted")
            if judged.decisions:
                reader.wake()
                state = (await self.snapshots.states([subject_id]))[subject_id]
        if self._owes_push(adapter, state, seen, kept):
            note = f"read back from {provider}, it held other state and no newer change of its own: pushed again"
            await self.repush(subject_id, [provider], note)
            reader.wake()
            done.append("repushed")
        return done

    @staticmethod
    def _owes_push(adapter: Adapter, state: SubjectState, seen: Observation, kept: Collection[str]) -> bool:
        """Whether what the provider holds still differs from desired on anything but the opt-outs kept
        there (on an address other subjects share)."""
        desired = adapter.project(state)
        if seen.held == desired:
            return False
        wanted, held = adapter.term_states(desired), adapter.term_states(seen.held)
        differing = {term for term in wanted.keys() | held.keys() if wanted.get(term) != held.get(term)}
        return not differing or not differing <= set(kept)

    # -- repairs ------------------------------------------------------------------------

    async def adopt_decision(
        self,
        subject_id: str,
        provider: str,
        purposes: Mapping[str, PurposeState],
        occurred_at: datetime,
        seen: Observation,
        note: str | None = None,
    ) -> DecisionOut:
        """Record what ``provider`` holds as a decision (source ``provider:<name>``): it fans out to
        the others, and is not pushed back to the provider it came from."""
        note = note or f"read back from {provider}: changed there at {occurred_at.isoformat()}"
        now = self.clock()
        rules = decision_context(self.settings.purposes, now, self.settings.max_clock_skew_s)  # as a caller's
        decision = own_decision(subject_id, purposes, occurred_at, f"provider:{provider}", note, rules)
        return await self.store.ledger.record(decision, self.adapters, now, held={provider: seen.held})

    async def adopt(self, subject_id: str, provider: str) -> DecisionOut | None:
        """An admin adopts what a row's last read-back found different as the person's decision now;
        None when there is nothing to adopt (never read, or nothing there differs as a purpose state).
        ``NotAdoptable`` when what differs is not the person's: the gateway's own write read back, or a
        consent on an address other subjects share (the same rules as a read-back, but for the time:
        the admin's decision is dated now)."""
        adapter = self.adapters[provider]
        seen = await self.store.observations.get(subject_id, provider)
        state = await self.store.ledger.subject_state(subject_id)
        if seen is None or state is None:
            return None
        held = await self.store.outbox.acknowledged(subject_id, provider)
        judged = judge(adapter, state, seen, held.writes, self.clock(), self.skew)
        refused = {term: judged.not_adopted[term] for term in judged.not_theirs}
        if refused:
            raise NotAdoptable(provider, refused)
        states, wanted = adapter.term_states(seen.held), adapter.term_states(adapter.project(state))
        differing = {term for term, value in states.items() if wanted.get(term) != value}
        purposes = {p: states[term] for p, term in adapter.settings.purposes.items() if term in differing}
        if not purposes:
            return None
        note = f"adopted by an admin from {provider}'s read-back"
        return await self.adopt_decision(subject_id, provider, purposes, self.clock(), seen, note)

    async def repush(self, subject_id: str, providers: Collection[str], note: str) -> DecisionOut | None:
        """Push the subject to ``providers`` again whatever they acknowledged (also unobservable ones)."""
        return await self.store.ledger.repush(subject_id, providers, self.adapters, self.clock(), note)


def encode_cursor(row: ProviderSync) -> str:
    return base64.urlsafe_b64encode(f"{row.subject_id}|{row.provider}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Raises ValueError for a cursor this service did not hand out."""
    subject_id, bar, provider = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
    if not bar or not subject_id or not provider:
        raise ValueError("not a reconciliation cursor")
    return subject_id, provider


SCHEDULE = uuid.UUID("6f9d0b8e-3c1a-4b7e-9a35-7d2c4e1f0a11")  # namespace of the scheduled runs' ids


class RunLoop:
    """In a worker process (one of its chores): start the scheduled runs and execute queued ones.

    A scheduled run's id is derived from its time slot, so with several workers exactly one
    of them creates it; whichever claims it runs it, and another resumes it if that one dies.
    """

    def __init__(self, reconciler: Reconciler, reader: Reader) -> None:
        self.reconciler = reconciler
        self.reader = reader

    async def step(self) -> bool:
        """Schedule a run if one is due, then execute one queued run; whether one was run."""
        reconciler = self.reconciler
        settings, now = reconciler.settings.reconcile, reconciler.clock()
        if settings.every_s and reconciler.observable():
            slot = int(now.timestamp() // settings.every_s)
            run_id = str(uuid.uuid5(SCHEDULE, f"{slot}"))
            await reconciler.store.runs.create(reconciler.observable(), None, now, run_id=run_id, scheduled=True)
        run = await reconciler.store.runs.claim(now, settings.lease_s)
        if run is None:
            return False
        await reconciler.execute(run, self.reader)
        return True

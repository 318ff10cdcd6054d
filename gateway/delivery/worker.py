"""The delivery worker: the only code that talks to providers.

Each provider is a lane with its own httpx client, connection pool and concurrency
limit, claimed separately, so one slow or failing provider never delays another.

A lane whose adapter is ``Bulk`` (Wix) claims up to ``bulk_size`` deliveries at once and pushes the
first syncs among them in bulk flows (a request per ``bulk_size`` items), the others alone; every
delivery still ends on its own: its attempts, retry ladder, dead letter and replay as if pushed alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Collection, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adapters.base import Ack, Adapter, Bulk, TooLarge, Write, drive, expected, item_writes_of, sender, writes_of
from adapters.errors import ProviderError, TransientError
from gateway import __version__
from gateway.clock import Clock, utcnow
from gateway.config import RetrySettings, Settings
from gateway.metrics import Metrics
from gateway.redaction import mask_values, redact
from gateway.store import Store
from gateway.store.grouping import GroupCommit
from gateway.store.outbox import ABANDONED, Attempt, Claim, Ended, Held, Outcome
from gateway.store.ratelimit import Budget, Sleep
from schemas.api import DeliveryStatus
from schemas.consent import SubjectState

USER_AGENT = f"consent-gateway/{__version__}"

log = structlog.get_logger("consent_gateway.worker")
T = TypeVar("T")


@dataclass
class Journal:
    """What one delivery did: each request tried, what each push request set there (the gateway's own
    writes: ``gateway.rules.provenance``), and the pair's fence when it read what the provider held."""

    attempts: list[Attempt] = field(default_factory=list)
    writes: list[dict[str, Write]] = field(default_factory=list)
    fence: int = 0
    private: tuple[str, ...] = ()  # the subject's own texts: a provider echoing them back is no news
    unsure: bool = False  # a request went unanswered: it may still land at the provider, later

    def text(self, adapter: Adapter, error: ProviderError) -> str:
        """An error as it may be stored and logged: no secret, and none of what the push sent
        about the person (Intempt's error ``message`` can repeat the note the push carried)."""
        return mask_values(redact(str(error), adapter.secrets()), self.private)

    def sending(self, request: httpx.Request) -> None:
        """What a push request sets, written down before it is sent: an answer lost on the way may hide
        that it landed."""
        if writes := writes_of(request):
            self.writes.append(writes)

    def tried(self, request: httpx.Request, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def unanswered(self, request: httpx.Request) -> None:
        self.unsure = True


class Record(Protocol):
    """Where a flow's requests are written down: one delivery's Journal, or those of a bulk flow."""

    def text(self, adapter: Adapter, error: ProviderError) -> str: ...

    def sending(self, request: httpx.Request) -> None: ...

    def tried(self, request: httpx.Request, attempt: Attempt) -> None: ...

    def unanswered(self, request: httpx.Request) -> None: ...


@dataclass
class Together:
    """The journals of the deliveries one bulk flow pushes, by their index in its input: each request's
    writes and attempt go to the deliveries it carries (``json_request(item_writes=…)``) and no other."""

    members: Sequence[Journal]

    def text(self, adapter: Adapter, error: ProviderError) -> str:
        private = tuple(text for journal in self.members for text in journal.private)
        return mask_values(redact(str(error), adapter.secrets()), private)

    def sending(self, request: httpx.Request) -> None:
        for index, writes in item_writes_of(request).items():
            self.members[index].writes.append(writes)

    def tried(self, request: httpx.Request, attempt: Attempt) -> None:
        for index in item_writes_of(request):
            self.members[index].attempts.append(attempt)

    def unanswered(self, request: httpx.Request) -> None:
        for index in item_writes_of(request):
            self.members[index].unsure = True


@dataclass(eq=False)
class Job:
    """One claimed delivery under way: its journal, what the provider holds, and its group's claims still
    under way (the group's heartbeat renews those leases; a delivery leaves it when it ends)."""

    claim: Claim
    live: set[Claim]
    journal: Journal = field(default_factory=Journal)
    held: Held = field(default_factory=Held)


Ready = tuple[Job, SubjectState]
"""A delivery with the subject's newest state, to push."""


class Lane:
    """One provider: its adapter, its own client, concurrency limit and request budget."""

    def __init__(
        self, adapter: Adapter, budget: Budget | None, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        settings = adapter.settings
        self.adapter = adapter
        self.bulk = adapter if isinstance(adapter, Bulk) and adapter.bulk_size > 0 else None  # 0: off
        self.budget = budget
        self.active = 0  # deliveries claimed and not yet ended
        # Claimed ahead: twice as many as may be pushed at once wait their turn (``pacing``), so a push
        # that ends starts the next at once instead of waiting for a claim and a read. The lane claims
        # again once its concurrency's worth is free (as many still waiting as in flight), so its groups
        # (one claim, read, heartbeat and commit for many deliveries) stay large: claiming for every two
        # deliveries at concurrency 4 cost the worker ~7 % of its CPU.
        self.limit = 3 * settings.concurrency
        self.refill = settings.concurrency
        # deliveries pushed alone at once: a Bulk lane's group of bulk_size claims works through them as
        # many at a time as any lane would, so it never queues its store work ahead of its own lease
        # heartbeat in the connection pool (leases lapsed by the hundred without this)
        self.pacing = asyncio.Semaphore(settings.concurrency)
        # Clients of at most CONNECTIONS_PER_CLIENT connections each, sharing one auth (Masivo's token):
        # httpcore's pool looks at every connection it holds on each request and each answer, so one pool
        # of 32 cost more than the requests themselves. A request in flight holds a slot, a client's index:
        # a client has as many slots as connections, so no request waits in one pool while another idles.
        auth = adapter.auth()
        sizes = client_sizes(settings.concurrency)
        self.clients = [self._client(adapter, auth, size, transport) for size in sizes]
        self._senders = [sender(client, settings.max_response_bytes) for client in self.clients]
        self.slots: asyncio.LifoQueue[int] = asyncio.LifoQueue()  # requests in flight: pushes and reads together
        for index, size in enumerate(sizes):
            for _ in range(size):
                self.slots.put_nowait(index)

    @staticmethod
    def _client(
        adapter: Adapter, auth: httpx.Auth, connections: int, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        settings = adapter.settings
        return httpx.AsyncClient(
            base_url=settings.base_url,
            auth=auth,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
            # as many kept alive as may be open: httpcore closes idle connections beyond its keep-alive
            # count (20 by default), and a larger pool then opened a new connection for most requests
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,  # a redirect is refused (adapters' check), never followed with our keys
            headers={"user-agent": USER_AGENT},
            trust_env=False,  # no proxy or netrc credentials picked up from the environment
        )

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send with a hard deadline (also over in-process transports) and classify I/O failures."""
        name, timeout = self.adapter.name, self.adapter.settings.timeout_s
        try:
            slot = await self.slots.get()
            try:
                if self.budget is not None:
                    await self.budget.acquire()
                async with asyncio.timeout(timeout):
                    return await self._senders[slot](request)
            finally:
                self.slots.put_nowait(slot)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:  # nothing was sent
            raise TransientError(name, f"connection failed: {type(error).__name__}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise TransientError(name, f"no answer within {timeout:g} s", unanswered=True) from None
        except httpx.TransportError as error:
            raise TransientError(name, f"connection failed: {type(error).__name__}", unanswered=True) from None
        except TooLarge as error:
            raise TransientError(name, str(error)) from None


class Worker:
    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        settings: Settings,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        # The lease heartbeat's own sleep: real time, as a lease guards against real crashes.
        self.beat: Sleep = asyncio.sleep
        transports = transports or {}
        self.lanes = {
            name: Lane(adapter, self._budget(adapter, sleep), transports.get(name))
            for name, adapter in adapters.items()
        }
        self.identity = f"{socket.gethostname()}:{os.getpid()}"  # written on each attempt
        self._wake = asyncio.Event()
        self._due: set[str] | None = None  # lanes the next dispatch claims for (None: every lane)
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._pushing = 0  # pushes under way, in every lane: outcomes about to end
        self.outcomes: GroupCommit[Ended, bool] = GroupCommit(self._finish_group, name="outcomes", gather=self._gather)

    def _budget(self, adapter: Adapter, sleep: Sleep) -> Budget | None:
        per_minute = adapter.settings.rate_per_minute
        return self.store.budget(adapter.name, per_minute, sleep) if per_minute else None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="delivery-worker")
        concurrency = {name: lane.adapter.settings.concurrency for name, lane in self.lanes.items()}
        log.info("worker_started", worker=self.identity, concurrency=concurrency)

    async def stop(self) -> None:
        """Stop claiming, let in-flight deliveries finish, close the clients.

        The loop is asked to stop, never cancelled: a cancel landing inside a claim could
        commit leases whose deliveries then never start, stranding them until the lease ends.
        """
        self._stopping.set()
        self._wake.set()
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane in self.lanes.values():
            await lane.aclose()
        if self._loop is not None:
            log.info("worker_stopped", worker=self.identity)

    def wake(self) -> None:
        """Deliveries may be due: claim for every lane now."""
        self._due = None
        self._wake.set()

    def _refill(self, lane: Lane) -> None:
        """Room for a group in this lane: claim for it now (not for the others, whose claims would find
        what they found last time)."""
        if self._due is not None:
            self._due.add(lane.adapter.name)
        self._wake.set()

    async def read(self, provider: str, flow: Generator[httpx.Request, httpx.Response, T]) -> T:
        """A read-back flow through the provider's lane: its client, concurrency, budget, retries."""
        return await self.run_flow(self.lanes[provider], flow, Journal())

    async def wait_for_change(self, timeout: float) -> None:
        """Return when any delivery finishes, or after ``timeout`` seconds."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before dispatching: a wake (or stop) arriving meanwhile is kept
            lanes, self._due = self._due, set()
            try:
                await self.dispatch(lanes)
            except Exception:  # a store hiccup must not kill the worker
                log.exception("dispatch_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.worker.poll_interval_s)
            except TimeoutError:
                self._due = None

    # -- claiming ------------------------------------------------------------------------

    async def dispatch(self, only: Collection[str] | None = None) -> int:
        """Claim due deliveries for every lane with room (or those ``only``) and start them; returns how many."""
        started = 0
        for name, lane in self.lanes.items():
            if self._stopping.is_set():
                break
            if only is not None and name not in only:
                continue
            room = min(lane.limit - lane.active, self.settings.worker.batch_size)
            if room <= 0:
                continue
            claims = await self.store.outbox.claim(
                name,
                lane.bulk.bulk_size if lane.bulk else room,
                self.clock(),
                self.settings.worker.lease_s,
                ladder_steps=len(self.settings.retry.ladder_s),
            )
            for claim in [claim for claim in claims if claim.abandoned]:
                self._report(claim, Outcome(DeliveryStatus.dead, error=ABANDONED, exhausted=True))
            claims = [claim for claim in claims if not claim.abandoned]
            # One per subject × provider pair: the claim never leases two. The claims go as one group: one
            # read of what to push, one lease heartbeat, outcomes committed together; each delivery is
            # pushed and ends on its own. Each counts as under way until it ends, so a lane claims again
            # as its deliveries drain.
            if claims:
                lane.active += len(claims)
                task = asyncio.create_task(self._deliver_leased(lane, claims))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            started += len(claims)
        return started

    async def drain(self) -> None:
        """Deliver everything due now, and what that makes due, until nothing is left (tests, CLI)."""
        while await self.dispatch() or self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _deliver_leased(self, lane: Lane, claims: Sequence[Claim]) -> None:
        live = set(claims)
        heartbeat = asyncio.create_task(self._keep_leased(live))
        try:
            await self._deliver(lane, [Job(claim, live) for claim in claims])
        finally:
            heartbeat.cancel()
            lane.active -= len(live)  # any that never ended (each that did, counted itself out)
            self._refill(lane)  # what its outcomes made due is of its own pairs: no other lane has news
            async with self._changed:
                self._changed.notify_all()

    async def _keep_leased(self, live: set[Claim]) -> None:
        """Renew the leases of the claims still under way every third of the lease's length, in one
        statement for a whole group; a lapsed one is no longer renewed."""
        lease_s = self.settings.worker.lease_s
        while live:
            await self.beat(lease_s / 3)
            try:
                held = await self.store.outbox.renew_all(list(live), self.clock(), lease_s)
            except Exception:  # the next beat tries again; the lease is long enough for one miss
                log.exception("lease_renewal_failed", deliveries=sorted(claim.id for claim in live))
                continue
            for claim in [claim for claim in live if claim.id not in held]:  # one ended meanwhile left `live`
                log.warning("lease_lapsed", provider=claim.provider, delivery=claim.id, subject=claim.subject_id)
                live.discard(claim)  # the outcome will not count: the pair is queued again when it is recorded

    # -- delivering ----------------------------------------------------------------------

    async def _deliver(self, lane: Lane, jobs: Sequence[Job]) -> None:
        """Push each subject's newest state (never a stale payload) and record each outcome: first syncs
        together where the adapter can, every other delivery alone, concurrently."""
        ready = await self._load(lane.adapter, jobs)
        together = self._together(lane.bulk, ready)
        alone = [self._push_alone(lane, job, state) for job, state in ready if (job, state) not in together]
        await asyncio.gather(self._push_together(lane, together), *alone)

    async def _load(self, adapter: Adapter, jobs: Sequence[Job]) -> list[Ready]:
        """The subjects' newest states and what the provider holds, in one read for the group; the
        deliveries with something to push. The others end here: skipped when the provider holds it
        already, or a step on the retry ladder when reading failed (a failure outside the provider
        call ends ``dead`` after the ladder rather than coming back forever)."""
        ids = [job.claim.subject_id for job in jobs]
        try:
            states = await self.store.ledger.subject_states(ids, addressed=bool(adapter.addressed()))
            held = await self.store.outbox.held(adapter.name, ids)
        except Exception as error:
            failed = self._crashed(adapter.name, error, deliveries=[job.claim.id for job in jobs])
            await asyncio.gather(*(self._end(job, failed) for job in jobs))
            return []
        ready: list[Ready] = []
        ending: list[Awaitable[None]] = []
        for job in jobs:
            state, job.held = states.get(job.claim.subject_id), held.get(job.claim.subject_id, Held())
            job.journal.fence, job.journal.private = job.held.fence, state.private() if state else ()
            try:
                done = state is None or (state.erased_at is None and adapter.project(state) == job.held.acknowledged)
            except Exception as error:
                ending.append(self._end(job, self._crashed(adapter.name, error, delivery=job.claim.id)))
                continue
            if done or state is None:
                ending.append(self._end(job, None))
            else:
                ready.append((job, state))
        await asyncio.gather(*ending)
        return ready

    def _together(self, bulk: Bulk | None, ready: Sequence[Ready]) -> list[Ready]:
        """The first syncs to push in bulk: each on its first try (a retry goes alone, by the adapter's own
        push), and two at least (a lone one keeps the single push, the shape recorded cassettes hold)."""
        if bulk is None:
            return []
        first = [
            (job, state)
            for job, state in ready
            if job.claim.reschedules == 0
            and state.erased_at is None
            and bulk.first_sync(state, job.held.acknowledged, job.held.memo)
        ]
        return first if len(first) > 1 else []

    async def _push_alone(self, lane: Lane, job: Job, state: SubjectState) -> None:
        """One delivery's push, in its turn (``pacing``); its outcome is recorded after its turn, so the next
        push starts meanwhile."""
        async with lane.pacing:
            with self._under_way():
                result = await self._push(lane, job, state)
        await self._end(job, result)

    async def _push(self, lane: Lane, job: Job, state: SubjectState) -> Ack | ProviderError:
        adapter, held = lane.adapter, job.held
        try:
            flow = (
                adapter.erase(state, held.memo)
                if state.erased_at
                else adapter.push(state, held.acknowledged, held.memo)
            )
            return await self.run_flow(lane, flow, job.journal)
        except ProviderError as error:
            return error
        except Exception as error:
            return self._crashed(job.claim.provider, error, delivery=job.claim.id)

    async def _push_together(self, lane: Lane, ready: Sequence[Ready]) -> None:
        """Several first syncs in one bulk flow through the lane (its slots, budget and in-process retries
        of each request); each delivery then ends with its own result, as if pushed alone."""
        if lane.bulk is None or not ready:
            return
        jobs = [job for job, _ in ready]
        results: list[Ack | ProviderError]
        try:
            flow = lane.bulk.push_many([state for _, state in ready])
            with self._under_way():
                results = await self.run_flow(lane, flow, Together([job.journal for job in jobs]))
        except ProviderError as error:
            results = [error] * len(jobs)
        except Exception as error:
            results = [self._crashed(lane.adapter.name, error, deliveries=[job.claim.id for job in jobs])] * len(jobs)
        await asyncio.gather(*(self._end(job, result) for job, result in zip(jobs, results, strict=True)))

    @contextlib.contextmanager
    def _under_way(self) -> Iterator[None]:
        self._pushing += 1
        try:
            yield
        finally:
            self._pushing -= 1

    def _crashed(self, provider: str, error: Exception, **logged: object) -> TransientError:
        """A failure outside the provider call (an adapter bug, a store error): logged with its traceback,
        then a transient error, a step on the retry ladder."""
        log.exception("delivery_crashed", provider=provider, **logged)
        return TransientError(provider, f"internal error: {type(error).__name__} (see the worker log)")

    async def _end(self, job: Job, result: Ack | ProviderError | None) -> None:
        """Record how one delivery ended (None: skipped); its lease is no longer renewed. A store failing the
        record leaves the row leased: it is claimed again when the lease runs out."""
        try:
            outcome, ack = self._outcome(job, result)
            await self._finish(job.claim, outcome, job.journal, ack)
        except Exception:
            log.exception("delivery_not_recorded", provider=job.claim.provider, subject=job.claim.subject_id)
        finally:
            job.live.discard(job.claim)
            lane = self.lanes[job.claim.provider]
            lane.active -= 1
            if lane.limit - lane.active == lane.refill:  # room for a group: claim, without waiting for this one's
                self._refill(lane)

    def _outcome(self, job: Job, result: Ack | ProviderError | None) -> tuple[Outcome, Ack | None]:
        claim, journal = job.claim, job.journal
        if result is None:
            return Outcome(DeliveryStatus.skipped), None
        if isinstance(result, Ack):
            return Outcome(DeliveryStatus.succeeded, journal.attempts), result.model_copy(
                update={"memo": job.held.memo | result.memo}
            )
        if isinstance(result, TransientError):
            return self._reschedule(claim, result, journal), None
        text = journal.text(self.lanes[claim.provider].adapter, result)
        return Outcome(DeliveryStatus.dead, journal.attempts, text, result.status_code), None

    async def run_flow(self, lane: Lane, flow: Generator[httpx.Request, httpx.Response, T], journal: Record) -> T:
        """Drive a flow (a push or a read-back), each request retried on its own while it fails
        transiently, within the provider's concurrency and request budget."""

        async def send(request: httpx.Request) -> httpx.Response:
            async for attempt in self._retrying(lane.adapter.name):
                with attempt:
                    return await self._try(lane, request, journal)
            raise AssertionError("unreachable: tenacity re-raises the last error")

        return await drive(flow, send)

    async def _try(self, lane: Lane, request: httpx.Request, journal: Record) -> httpx.Response:
        """One request, written down whatever its end. A transient failure raises, so that
        request alone is retried: a push of several requests (Wix) does not start over for
        each blip. Any other answer goes back to the flow, which knows what a 404 or 409 means;
        an answer the flow said it expects (``json_request(expect=…)``) is a success. What a push
        request sets is journaled before it is sent: an answer lost on the way may hide that it landed."""
        started, began = self.clock(), time.monotonic()
        journal.sending(request)
        try:
            response = await lane.send(request)
        except ProviderError as failure:  # no answer, or the auth exchange (Masivo) refused
            self._note(lane.adapter, journal, request, (started, began), failure.status_code, failure)
            if isinstance(failure, TransientError) and failure.unanswered:
                journal.unanswered(request)
            raise
        error = None if response.status_code in expected(request) else _classified(lane.adapter, response)
        self._note(lane.adapter, journal, request, (started, began), response.status_code, error)
        if isinstance(error, TransientError):
            raise error
        return response

    def _note(
        self,
        adapter: Adapter,
        journal: Record,
        request: httpx.Request,
        when: tuple[datetime, float],
        status_code: int | None,
        error: ProviderError | None,
    ) -> None:
        started, began = when
        elapsed = time.monotonic() - began
        outcome = "succeeded" if error is None else "transient" if isinstance(error, TransientError) else "permanent"
        self.metrics.attempts.labels(adapter.name, outcome).inc()
        self.metrics.latency.labels(adapter.name).observe(elapsed)
        text = journal.text(adapter, error) if error else None
        journal.tried(request, Attempt(started, round(elapsed * 1000), outcome, status_code, text, self.identity))

    async def _finish(self, claim: Claim, outcome: Outcome, journal: Journal, ack: Ack | None = None) -> None:
        """Record the outcome with the others ending meanwhile (group commit), then report it. A push that
        left a request unanswered, or took over from a worker that lost its lease, is not sure what the
        provider will hold: such a request may still land, after a newer push. The pair is pushed again
        once that can no longer happen (twice the provider's timeout), whatever it acknowledged."""
        recheck = None
        if journal.unsure or claim.lost:
            recheck = self.clock() + timedelta(seconds=2 * self.lanes[claim.provider].adapter.settings.timeout_s)
        if await self.outcomes.commit(Ended(claim, outcome, ack, journal.writes, journal.fence, recheck)):
            self._report(claim, outcome)
            return
        self.metrics.deliveries.labels(claim.provider, "too_late").inc()
        fields = _logged(claim)
        log.warning("delivery_outcome_too_late", **fields, status=outcome.status.value, queued_again=True)

    def _gather(self) -> float:
        """How long an outcome group waits for others: while pushes are under way, their outcomes are
        milliseconds off, and one transaction for several costs about what one costs for one (at
        concurrency 4, three groups in four held a single outcome). With none under way, at once: the
        last delivery of a decision is never held back."""
        return self.settings.worker.outcome_gather_s if self._pushing else 0.0

    async def _finish_group(self, ended: Sequence[Ended]) -> list[bool]:
        return await self.store.outbox.finish_many(ended, self.clock())

    def _report(self, claim: Claim, outcome: Outcome) -> None:
        """Count and log how a delivery ended: a dead letter is a warning, giving up after the
        ladder (or after lost outcomes) an error, so an operator's alerting sees both."""
        self.metrics.deliveries.labels(claim.provider, outcome.status.value).inc()
        fields = _logged(claim)
        if outcome.status is not DeliveryStatus.dead:
            log.info("delivery_finished", **fields, status=outcome.status.value, attempts=len(outcome.attempts))
            return
        self.metrics.dead_letters.labels(claim.provider).inc()
        report = log.error if outcome.exhausted else log.warning
        report(
            "delivery_dead", **fields, attempts=len(outcome.attempts), error=outcome.error, gave_up=outcome.exhausted
        )

    def _retrying(self, provider: str) -> AsyncRetrying:
        retry = self.settings.retry
        retries = self.metrics.retries.labels(provider, "in_process")
        return AsyncRetrying(
            stop=stop_after_attempt(retry.attempts),
            wait=BackoffHonouringRetryAfter(retry),
            retry=retry_if_exception(lambda error: _retry_now(error, retry)),
            before_sleep=lambda _state: retries.inc(),
            sleep=self.sleep,
            reraise=True,
        )

    def _reschedule(self, claim: Claim, error: TransientError, journal: Journal) -> Outcome:
        """After the short retries: the next step of the durable ladder, or dead past its end."""
        text, attempts = journal.text(self.lanes[claim.provider].adapter, error), journal.attempts
        ladder = self.settings.retry.ladder_s
        if claim.reschedules >= len(ladder):
            message = f"gave up after {len(ladder)} retries: {text}"
            return Outcome(DeliveryStatus.dead, attempts, message, error.status_code, exhausted=True)
        retry = self.settings.retry
        delay = ladder[claim.reschedules] * random.uniform(1 - retry.jitter, 1 + retry.jitter)
        if error.status_code == 429:
            delay = max(delay, retry.min_after_429_s)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, retry.retry_after_cap_s))
        when = self.clock() + timedelta(seconds=delay)
        self.metrics.retries.labels(claim.provider, "rescheduled").inc()
        return Outcome(DeliveryStatus.retrying, attempts, text, error.status_code, when, rescheduled=True)


class BackoffHonouringRetryAfter:
    """Exponential backoff with jitter, but never sooner than the provider's Retry-After."""

    def __init__(self, retry: RetrySettings) -> None:
        self.backoff = wait_exponential_jitter(multiplier=retry.initial_s, max=retry.max_s, jitter=retry.initial_s)

    def __call__(self, state: RetryCallState) -> float:
        wait = self.backoff(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait


CONNECTIONS_PER_CLIENT = 8


def client_sizes(concurrency: int) -> list[int]:
    """A lane's connections split into clients of at most CONNECTIONS_PER_CLIENT, as even as can be."""
    clients = -(-concurrency // CONNECTIONS_PER_CLIENT)
    return [concurrency // clients + (index < concurrency % clients) for index in range(clients)]


def _logged(claim: Claim) -> dict[str, str]:
    """What a delivery's log lines say of it."""
    return {"provider": claim.provider, "delivery": claim.id, "subject": claim.subject_id}


def _classified(adapter: Adapter, response: httpx.Response) -> ProviderError | None:
    """The error this answer means by the adapter's own classification, or None for a success."""
    try:
        adapter.check(response)
    except ProviderError as error:
        return error
    return None


def _retry_now(error: BaseException, retry: RetrySettings) -> bool:
    """Transient errors are retried in-process unless the provider asks for a long pause."""
    if not isinstance(error, TransientError):
        return False
    return error.retry_after is None or error.retry_after <= retry.max_s

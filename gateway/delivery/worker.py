"""The delivery worker: the only code that talks to providers.

Each provider is a lane with its own httpx client, connection pool and concurrency
limit, claimed separately, so one slow or failing provider never delays another.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adapters.base import Ack, Adapter, TooLarge, Write, drive, expected, sender, writes_of
from adapters.errors import PermanentError, ProviderError, TransientError
from gateway import __version__
from gateway.clock import Clock, utcnow
from gateway.config import RetrySettings, Settings
from gateway.metrics import Metrics
from gateway.redaction import mask_values, redact
from gateway.store import Store
from gateway.store.outbox import ABANDONED, Attempt, Claim, Outcome
from gateway.store.ratelimit import Budget, Sleep
from schemas.api import DeliveryStatus

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

    def text(self, adapter: Adapter, error: ProviderError) -> str:
        """An error as it may be stored and logged: no secret, and none of what the push sent
        about the person (Intempt's error ``message`` can repeat the note the push carried)."""
        return mask_values(redact(str(error), adapter.secrets()), self.private)


class Lane:
    """One provider: its adapter, its own client, concurrency limit and request budget."""

    def __init__(
        self, adapter: Adapter, budget: Budget | None, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        settings = adapter.settings
        self.adapter = adapter
        self.budget = budget
        self.limit = settings.concurrency
        self.active = 0  # deliveries under way
        self.slots = asyncio.Semaphore(settings.concurrency)  # requests in flight: pushes and reads together
        self.client = httpx.AsyncClient(
            base_url=settings.base_url,
            auth=adapter.auth(),
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=settings.concurrency),
            follow_redirects=False,  # a redirect is refused (adapters' check), never followed with our keys
            headers={"user-agent": USER_AGENT},
            trust_env=False,  # no proxy or netrc credentials picked up from the environment
        )
        self._send = sender(self.client, settings.max_response_bytes)

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send with a hard deadline (also over in-process transports) and classify I/O failures."""
        name, timeout = self.adapter.name, self.adapter.settings.timeout_s
        try:
            async with self.slots:
                if self.budget is not None:
                    await self.budget.acquire()
                async with asyncio.timeout(timeout):
                    return await self._send(request)
        except (TimeoutError, httpx.TimeoutException):
            raise TransientError(name, f"no answer within {timeout:g} s") from None
        except httpx.TransportError as error:
            raise TransientError(name, f"connection failed: {type(error).__name__}") from None
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
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    def _budget(self, adapter: Adapter, sleep: Sleep) -> Budget | None:
        per_minute = adapter.settings.rate_per_minute
        return self.store.budget(adapter.name, per_minute, sleep) if per_minute else None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="delivery-worker")

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
            await lane.client.aclose()

    def wake(self) -> None:
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
            try:
                await self.dispatch()
            except Exception:  # a store hiccup must not kill the worker
                log.exception("dispatch_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.worker.poll_interval_s)
            except TimeoutError:
                pass

    # -- claiming ------------------------------------------------------------------------

    async def dispatch(self) -> int:
        """Claim due deliveries for every lane with room and start them; returns how many."""
        started = 0
        for name, lane in self.lanes.items():
            if self._stopping.is_set():
                break
            room = min(lane.limit - lane.active, self.settings.worker.batch_size)
            if room <= 0:
                continue
            claims = await self.store.outbox.claim(
                name, room, self.clock(), self.settings.worker.lease_s, ladder_steps=len(self.settings.retry.ladder_s)
            )
            for claim in [claim for claim in claims if claim.abandoned]:
                self._report(claim, Outcome(DeliveryStatus.dead, error=ABANDONED, exhausted=True))
            claims = [claim for claim in claims if not claim.abandoned]
            for claim in claims:  # one per subject × provider pair: the claim never leases two
                lane.active += 1
                task = asyncio.create_task(self._deliver_leased(lane, claim))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            started += len(claims)
        return started

    async def drain(self) -> None:
        """Deliver everything due now, and what that makes due, until nothing is left (tests, CLI)."""
        while await self.dispatch() or self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _deliver_leased(self, lane: Lane, claim: Claim) -> None:
        heartbeat = asyncio.create_task(self._keep_leased(claim))
        try:
            await self.deliver(lane, claim)
        except Exception:  # the row keeps its lease and is claimed again when it runs out
            log.exception("delivery_not_recorded", provider=lane.adapter.name, subject=claim.subject_id)
        finally:
            heartbeat.cancel()
            lane.active -= 1
            self.wake()
            async with self._changed:
                self._changed.notify_all()

    async def _keep_leased(self, claim: Claim) -> None:
        """Renew the lease every third of its length while the delivery runs."""
        lease_s = self.settings.worker.lease_s
        while True:
            await self.beat(lease_s / 3)
            try:
                if not await self.store.outbox.renew(claim, self.clock(), lease_s):
                    log.warning("lease_lapsed", provider=claim.provider, delivery=claim.id, subject=claim.subject_id)
                    return  # the outcome will not count: the pair is queued again when it is recorded
            except Exception:  # the next beat tries again; the lease is long enough for one miss
                log.exception("lease_renewal_failed", delivery=claim.id)

    # -- delivering ----------------------------------------------------------------------

    async def deliver(self, lane: Lane, claim: Claim) -> None:
        """Push the subject's newest state (never a stale payload) and record the outcome.

        A failure outside the provider call (an adapter bug, a store error reading the state)
        is a step on the retry ladder like any transient one, so the delivery ends ``dead``
        rather than coming back forever.
        """
        journal = Journal()
        ack: Ack | None = None
        try:
            outcome, ack = await self._attempt(lane, claim, journal)
        except Exception as error:
            log.exception("delivery_crashed", provider=claim.provider, delivery=claim.id)
            crash = TransientError(claim.provider, f"internal error: {type(error).__name__} (see the worker log)")
            outcome = self._reschedule(claim, crash, journal)
        await self._finish(claim, outcome, journal, ack)

    async def _attempt(self, lane: Lane, claim: Claim, journal: Journal) -> tuple[Outcome, Ack | None]:
        adapter, attempts = lane.adapter, journal.attempts
        state = await self.store.ledger.subject_state(claim.subject_id, addressed=bool(adapter.addressed()))
        journal.private = state.private() if state else ()
        held = await self.store.outbox.acknowledged(claim.subject_id, claim.provider)
        journal.fence = held.fence
        if state is None or (state.erased_at is None and adapter.project(state) == held.acknowledged):
            return Outcome(DeliveryStatus.skipped), None
        try:
            erase, push = adapter.erase, adapter.push
            flow = erase(state, held.memo) if state.erased_at else push(state, held.acknowledged, held.memo)
            ack = await self.run_flow(lane, flow, journal)
        except PermanentError as error:
            return Outcome(DeliveryStatus.dead, attempts, journal.text(adapter, error), error.status_code), None
        except TransientError as error:
            return self._reschedule(claim, error, journal), None
        return Outcome(DeliveryStatus.succeeded, attempts), ack.model_copy(update={"memo": held.memo | ack.memo})

    async def run_flow(self, lane: Lane, flow: Generator[httpx.Request, httpx.Response, T], journal: Journal) -> T:
        """Drive a flow (a push or a read-back), each request retried on its own while it fails
        transiently, within the provider's concurrency and request budget."""

        async def send(request: httpx.Request) -> httpx.Response:
            async for attempt in self._retrying(lane.adapter.name):
                with attempt:
                    return await self._try(lane, request, journal)
            raise AssertionError("unreachable: tenacity re-raises the last error")

        return await drive(flow, send)

    async def _try(self, lane: Lane, request: httpx.Request, journal: Journal) -> httpx.Response:
        """One request, written down whatever its end. A transient failure raises, so that
        request alone is retried: a push of several requests (Wix) does not start over for
        each blip. Any other answer goes back to the flow, which knows what a 404 or 409 means;
        an answer the flow said it expects (``json_request(expect=…)``) is a success. What a push
        request sets is journaled before it is sent: an answer lost on the way may hide that it landed."""
        started, began = self.clock(), time.monotonic()
        if writes := writes_of(request):
            journal.writes.append(writes)
        try:
            response = await lane.send(request)
        except ProviderError as failure:  # no answer, or the auth exchange (Masivo) refused
            self._note(lane.adapter, journal, started, began, failure.status_code, failure)
            raise
        error = None if response.status_code in expected(request) else _classified(lane.adapter, response)
        self._note(lane.adapter, journal, started, began, response.status_code, error)
        if isinstance(error, TransientError):
            raise error
        return response

    def _note(
        self,
        adapter: Adapter,
        journal: Journal,
        started: datetime,
        began: float,
        status_code: int | None,
        error: ProviderError | None,
    ) -> None:
        elapsed = time.monotonic() - began
        outcome = "succeeded" if error is None else "transient" if isinstance(error, TransientError) else "permanent"
        self.metrics.attempts.labels(adapter.name, outcome).inc()
        self.metrics.latency.labels(adapter.name).observe(elapsed)
        text = journal.text(adapter, error) if error else None
        journal.attempts.append(Attempt(started, round(elapsed * 1000), outcome, status_code, text, self.identity))

    async def _finish(self, claim: Claim, outcome: Outcome, journal: Journal, ack: Ack | None = None) -> None:
        outbox = self.store.outbox
        if await outbox.finish(claim, outcome, self.clock(), ack, sent=journal.writes, fence=journal.fence):
            self._report(claim, outcome)
            return
        self.metrics.deliveries.labels(claim.provider, "too_late").inc()
        fields = _logged(claim)
        log.warning("delivery_outcome_too_late", **fields, status=outcome.status.value, queued_again=True)

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

"""Delivery guarantees, end to end: the real worker, adapters and simulators, no real sleeping.

The worker's clock and sleeps are injected by ``World``; durable retry ladder steps are passed by
moving ``world.now``. Timeouts and connection failures come from ``ChaosTransport`` in front of the
simulators, never from the simulators' (real-time) hang.

What is checked, always against expectations computed here from the decisions themselves:

1. any interleaving of out-of-order and duplicated decisions and worker drains leaves every provider
   holding the newest decision per purpose, and the ledger's effective/superseded purposes right
   (hypothesis);
2. 2,000 decisions with at least 30 % of requests faulted all end delivered (none dead, none open), from the
   simulators' request logs no push ever goes back in time, and the providers hold the newest state;
3. explicit out-of-order and duplicate cases: a late older decision is kept in the ledger with its
   ``superseded_purposes`` and sends nothing; and a push the provider applied but never
   acknowledged is not mistaken for the state the provider held before it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.store import Store
from gateway.store.tables import deliveries
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.world import NOW, PROVIDERS, TCF, World

# -- the providers' terms, written down here from the adapters' documented default mappings ----------

PURPOSES = ("email_marketing", "sms_marketing", "push_notifications", "analytics")
MASIVO_PURPOSES = (  # every Masivo purpose is sent on each PATCH; only granted ones are true
    "behavioral_campaigns",
    "coupon_campaigns",
    "punchcard_campaigns",
    "email_marketing",
    "push_notifications",
    "link_tracking",
)
MASIVO_MAPPED = ("email_marketing", "push_notifications")  # sms_marketing, analytics: no Masivo purpose
WIX_CHANNEL = {"email_marketing": "EMAIL", "sms_marketing": "PHONE"}
WIX_STATE = {"granted": "CONFIRMED", "denied": "REVOKED", "pending": "PENDING"}
WIX_ACTIVITY = {
    "CONFIRMED": "lastConfirmationActivity",
    "PENDING": "lastConfirmationActivity",
    "REVOKED": "lastRevokeActivity",
}
INTEMPT_CATEGORY = {
    "email_marketing": "email",
    "sms_marketing": "sms",
    "push_notifications": "push",
    "analytics": "analytics",
}
INTEMPT_ACTION = {"granted": "accept", "denied": "reject", "pending": "reject"}
FINAL = {"succeeded", "skipped"}
OPEN = ("pending", "retrying", "sending")


# -- a transport that loses answers and connections, with a seeded RNG --------------------------------


class ChaosTransport(httpx.AsyncBaseTransport):
    """In front of a simulator: with seeded probabilities, fail before the request reaches it
    (``ConnectError``) or forward it and lose the answer (``ReadTimeout``: the provider applied
    the push, the gateway cannot know: the at-least-once case). ``refuse`` picks requests to fail
    with ``ConnectError`` every time. No real time passes."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        seed: int,
        connect_error_rate: float = 0.0,
        lost_answer_rate: float = 0.0,
        refuse: Callable[[httpx.Request], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.rng = random.Random(seed)
        self.connect_error_rate = connect_error_rate
        self.lost_answer_rate = lost_answer_rate
        self.refuse = refuse
        self.counts: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        roll = self.rng.random()
        if roll < self.connect_error_rate or (self.refuse is not None and self.refuse(request)):
            self.counts["connect_error"] += 1
            raise httpx.ConnectError("chaos: connection refused", request=request)
        self.counts["forwarded"] += 1
        response = await self.inner.handle_async_request(request)
        if roll < self.connect_error_rate + self.lost_answer_rate:
            await response.aread()
            await response.aclose()
            # an error answer lost on the way is one fault, already in the provider's own log
            self.counts["lost_answer" if response.is_success else "lost_error_answer"] += 1
            raise httpx.ReadTimeout("chaos: the answer was lost", request=request)
        return response


# -- decisions and the expected state, computed independently of the gateway -------------------------


@dataclass(frozen=True)
class Posted:
    subject: str
    purposes: tuple[tuple[str, str], ...]
    occurred_at: datetime

    def decision(self) -> Decision:
        return Decision.model_validate(
            {
                "subject": {"id": self.subject, "email": email_of(self.subject), "phone": phone_of(self.subject)},
                "purposes": dict(self.purposes),
                "tcf_string": TCF,
                "occurred_at": self.occurred_at,
                "source": "web",
            },
            strict=False,
        )


def email_of(subject: str) -> str:
    return f"{subject}@example.com"


def phone_of(subject: str) -> str:
    """A phone of its own per subject: Wix keys PHONE consents by number."""
    phone = f"+1415{int(uuid.uuid5(uuid.NAMESPACE_OID, subject).int % 10**7):07d}"
    PHONES[phone] = subject
    return phone


@dataclass
class Expected:
    """Newest decision per subject and purpose, in receive order (a tie goes to the later one)."""

    newest: dict[str, dict[str, tuple[datetime, str]]] = field(default_factory=lambda: defaultdict(dict))

    def receive(self, posted: Posted) -> tuple[list[str], list[str]]:
        """Take a decision in; answer the purposes it is newest for and those it is too old for."""
        mine = self.newest[posted.subject]
        effective, superseded = [], []
        for purpose, state in posted.purposes:
            if purpose not in mine or posted.occurred_at >= mine[purpose][0]:
                mine[purpose] = (posted.occurred_at, state)
                effective.append(purpose)
            else:
                superseded.append(purpose)
        return sorted(effective), sorted(superseded)

    def states(self, subject: str) -> dict[str, str]:
        return {purpose: state for purpose, (_, state) in self.newest[subject].items()}

    def flat(self) -> dict[Key, Any]:
        """What each provider should hold, per (provider, subject, item):

        Masivo: ("masivo", customer, "purposes") -> all six purposes as booleans (only granted is
        true), and no consent at all where no Masivo purpose was decided; Wix: ("wix", subject,
        EMAIL|PHONE) -> CONFIRMED|REVOKED|PENDING; Intempt: ("intempt", user, category) -> accept|reject.
        """
        out: dict[Key, Any] = {}
        for subject in self.newest:
            states = self.states(subject)
            if any(purpose in states for purpose in MASIVO_MAPPED):
                out[("masivo", subject, "purposes")] = {name: states.get(name) == "granted" for name in MASIVO_PURPOSES}
            for purpose, state in states.items():
                if purpose in WIX_CHANNEL:
                    out[("wix", subject, WIX_CHANNEL[purpose])] = WIX_STATE[state]
                out[("intempt", subject, INTEMPT_CATEGORY[purpose])] = INTEMPT_ACTION[state]
        return out


Key = tuple[str, str, str]  # (provider, subject, item): see Expected.flat


# -- reading the simulators ------------------------------------------------------------------------


def wix_subject(address: str) -> str:
    """The subject a Wix address belongs to (addresses are made from subject ids here)."""
    return address.partition("@")[0] if "@" in address else PHONES.get(address, address)


PHONES: dict[str, str] = {}  # phone -> subject, filled by phone_of


async def provider_states(world: World) -> dict[Key, Any]:
    """What the simulators hold, keyed like Expected.flat."""
    held: dict[Key, Any] = {}
    for customer, purposes in (await world.inspect("masivo"))["state"]["effective_purposes"].items():
        held[("masivo", customer, "purposes")] = purposes
    for consent in (await world.inspect("wix"))["state"]["consents"].values():
        details = consent["details"]
        held[("wix", wix_subject(details.get("email") or details["phone"]), details["type"])] = consent["state"]
    intempt = (await world.inspect("intempt"))["state"]["consents"].get("acme", {}).get("web", {})
    for user, categories in intempt.items():
        for category, value in categories.items():
            held[("intempt", user, category)] = value["action"]
    return held


class ProviderDiverged(AssertionError):
    """A provider does not hold the newest decision."""


async def assert_providers_hold(world: World, expected: Expected) -> None:
    """Every provider holds the newest decision per purpose; raises ProviderDiverged naming the rest."""
    want, held = expected.flat(), await provider_states(world)
    wrong = {key: (held.get(key), want.get(key)) for key in set(held) | set(want) if held.get(key) != want.get(key)}
    if wrong:
        sample = dict(sorted(wrong.items())[:6])
        raise ProviderDiverged(f"{len(wrong)} items wrong at the providers, (held, expected) e.g. {sample}")


def pushes(provider: str, log: Iterable[Mapping[str, Any]]) -> list[tuple[Key, datetime, Any, int | None]]:
    """Every state push in a simulator's request log, in arrival order: (the item it sets, its time,
    the value it sets, the simulator's answer status)."""
    out: list[tuple[Key, datetime, Any, int | None]] = []
    for entry in log:
        body, status = entry["body"], entry["status"]
        if not isinstance(body, dict):
            continue
        if provider == "masivo" and entry["method"] == "PATCH" and entry["path"].endswith("/consent"):
            consent = body["consent"]
            moment = datetime.fromisoformat(consent["consent_timestamp"])
            value = {name: consent["purposes"].get(name) is True for name in MASIVO_PURPOSES}
            out.append((("masivo", consent["customer_id"], "purposes"), moment, value, status))
        elif provider == "wix" and (entry["method"] == "PATCH" or entry["path"].endswith("/upsert")):
            for consent in body.get("info") or [body["marketingConsent"]]:  # a bulk upsert: each item a push
                details = consent["details"]
                key = ("wix", wix_subject(details.get("email") or details["phone"]), details["type"])
                moment = datetime.fromisoformat(consent[WIX_ACTIVITY[consent["state"]]]["updatedDate"])
                out.append((key, moment, consent["state"], status))
        elif provider == "intempt" and entry["method"] == "POST":
            moment = datetime.fromtimestamp(body["timestamp"], NOW.tzinfo)
            out.append((("intempt", body["userId"], body["category"]), moment, body["action"], status))
    return out


def stale_pushes(provider: str, log: Iterable[Mapping[str, Any]]) -> list[str]:
    """Pushes whose time is older than one already sent for the same thing (an identical retry is fine)."""
    newest: dict[Key, datetime] = {}
    stale = []
    for key, moment, _, _ in pushes(provider, log):
        if key in newest and moment < newest[key]:
            stale.append(f"{provider} {key}: {moment.isoformat()} after {newest[key].isoformat()}")
        newest[key] = max(moment, newest.get(key, moment))
    return stale


async def delivery_statuses(world: World) -> Counter[str]:
    async with world.gateway.store.engine.connect() as conn:
        rows = await conn.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status))
        return Counter({status: count for status, count in rows})


async def drain_until_settled(world: World, step: timedelta, max_rounds: int = 30) -> int:
    """Drain, then move the clock past the next ladder step, until no delivery is open."""
    for rounds in range(1, max_rounds + 1):
        await world.gateway.worker.drain()
        statuses = await delivery_statuses(world)
        if not any(statuses[status] for status in OPEN):
            return rounds
        world.now += step
    raise AssertionError(f"deliveries still open after {max_rounds} rounds: {dict(statuses)}")


@asynccontextmanager
async def fresh_world(url: str, **options: Any) -> AsyncIterator[World]:
    store = Store.from_url(url)
    await store.upgrade()
    world = World(store, **options)
    try:
        yield world
    finally:
        await world.gateway.worker.stop()
        await world.control.aclose()
        await store.close()


# -- 1. property: any interleaving ends with the newest decision per purpose everywhere ---------------


@st.composite
def scenarios(draw: st.DrawFn) -> list[Posted | None]:
    """Decisions over 1-3 subjects and 2-4 purposes, some posted twice, in any order; ``None`` = drain."""
    subjects = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    purposes = draw(st.lists(st.sampled_from(PURPOSES), min_size=2, max_size=4, unique=True))
    decision = st.builds(
        Posted,
        subject=st.sampled_from(subjects),
        purposes=st.dictionaries(
            st.sampled_from(purposes), st.sampled_from(["granted", "denied", "pending"]), min_size=1
        ).map(lambda chosen: tuple(sorted(chosen.items()))),
        # a narrow window of whole seconds, so equal occurred_at (ties) come up often
        occurred_at=st.integers(0, 12).map(lambda s: NOW - timedelta(minutes=10) + timedelta(seconds=s)),
    )
    decisions = draw(st.lists(decision, min_size=1, max_size=12))
    again = draw(st.lists(st.sampled_from(decisions), max_size=4))  # duplicates, posted again
    order = draw(st.permutations([*decisions, *again]))
    events: list[Posted | None] = []
    for posted in order:
        events.append(posted)
        if draw(st.booleans()):
            events.append(None)
    return events


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=scenarios())
async def test_any_interleaving_of_late_and_duplicate_decisions_ends_with_the_newest_state_everywhere(
    tmp_path: Path, events: list[Posted | None]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / f'prop-{uuid.uuid4().hex}.db'}"
    expected = Expected()
    async with fresh_world(url) as world:
        for event in events:
            if event is None:
                await world.gateway.worker.drain()
            else:
                recorded = await world.gateway.record(event.decision())
                assert (recorded.effective_purposes, recorded.superseded_purposes) == expected.receive(event)
        await world.gateway.worker.drain()

        await assert_providers_hold(world, expected)
        statuses = await delivery_statuses(world)
        assert set(statuses) <= FINAL, statuses
        for provider in PROVIDERS:
            assert stale_pushes(provider, (await world.inspect(provider))["requests"]) == []


# -- 2. load: 2,000 decisions, at least 30 % of requests faulted -----------------------------------------

LOAD_SEED = 20261123
LOAD_DECISIONS = 2000
LOAD_SUBJECTS = 100
SIM_ERROR_RATE = 0.25  # simulator-side: 503 or 429 + Retry-After, alternating per chunk
CONNECT_ERROR_RATE = 0.07  # chaos transport: refused before the provider sees it
LOST_ANSWER_RATE = 0.08  # chaos transport: applied by the provider, answer lost
CHUNK = 500  # decisions per round: a drain runs while they are recorded, then finishes them
# concurrent recorders, and a drain running while they record: SQLite serializes writers (BEGIN
# IMMEDIATE) and a writer that finds the lock taken sleeps in SQLite's busy handler, so there both only
# add idle time (measured: ~10 s more on 2 cores); PostgreSQL takes them in parallel
POSTERS = {"sqlite": 1, "postgresql": 4}
CONCURRENT_DRAIN = {"sqlite": False, "postgresql": True}
# World's short test ladder (3 steps) gives a 2-4 request flow (Wix's first sync) ~1e-3 odds of going
# dead under 30 % faults; the configured default ladder (7 steps, 12 h max with jitter) is what
# production runs, and the clock moves past each step for free.
LOAD_RETRY = {"attempts": 4}
SETTLE_STEP = timedelta(hours=13)


def load_decisions(rng: random.Random) -> list[Posted]:
    """~20 decisions per subject over one day, posted roughly in time order except that one in five
    arrives late (up to 6 h after newer ones) and one in ten is posted twice. Each has its own
    occurred_at (a tie would make the expected state depend on the concurrent posters' order)."""
    subjects = [f"load-{i:03d}" for i in range(LOAD_SUBJECTS)]
    base = NOW - timedelta(days=1)
    unique = LOAD_DECISIONS - LOAD_DECISIONS // 10
    moments = rng.sample(range(20 * 3600 * 1000), unique)  # distinct milliseconds over 20 h
    arrivals = []
    for moment in moments:
        chosen = rng.sample(PURPOSES, rng.randint(1, 3))
        purposes = tuple(sorted((p, rng.choice(["granted", "denied", "pending"])) for p in chosen))
        posted = Posted(rng.choice(subjects), purposes, base + timedelta(milliseconds=moment))
        delay = rng.uniform(0, 6 * 3600 * 1000) if rng.random() < 0.2 else rng.uniform(0, 60_000)
        arrivals.append((moment + delay, posted))
    for moment, posted in rng.sample(arrivals, LOAD_DECISIONS - unique):
        arrivals.append((moment + rng.uniform(0, 3600 * 1000), posted))  # the same decision again
    return [posted for _, posted in sorted(arrivals, key=lambda pair: pair[0])]


@pytest.mark.xdist_group("heavy")  # the long multi-process tests share one worker (README)
async def test_two_thousand_decisions_under_faults_all_arrive_newest_wins_and_nothing_goes_back_in_time(
    store: Store,
) -> None:
    """2,000 decisions (100 subjects, ~20 each, 1 in 5 late, 1 in 10 twice) with at least 30 % of
    requests faulted:
    simulator 503s / 429s with Retry-After, refused connections and lost answers (seeds LOAD_SEED..).
    Every delivery ends succeeded or skipped; no push for an item is ever older than one already sent
    for it (simulator request logs); every provider holds the newest decision per purpose. The wall
    time is printed."""
    started = time.perf_counter()
    rng = random.Random(LOAD_SEED)
    chaos: dict[str, ChaosTransport] = {}

    def wrap(name: str, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        chaos[name] = ChaosTransport(
            inner,
            seed=LOAD_SEED + PROVIDERS.index(name),
            connect_error_rate=CONNECT_ERROR_RATE,
            lost_answer_rate=LOST_ANSWER_RATE,
        )
        return chaos[name]

    world = World(store, wrap_transport=wrap, retry=LOAD_RETRY)
    dialect = store.engine.dialect.name
    decisions = load_decisions(rng)
    expected = Expected()
    for posted in decisions:
        expected.receive(posted)  # unique occurred_at per subject: receive order does not matter

    async def set_faults(chunk: int) -> None:
        for index, provider in enumerate(PROVIDERS):
            if (chunk + index) % 2:
                await world.faults(provider, error_rate=SIM_ERROR_RATE, status=429, retry_after_s=2)
            else:
                await world.faults(provider, error_rate=SIM_ERROR_RATE, status=503, retry_after_s=None)

    for index, provider in enumerate(PROVIDERS):
        await world.faults(provider, latency_ms=0, seed=LOAD_SEED + 10 + index)
    await set_faults(0)

    try:
        for chunk, start in enumerate(range(0, LOAD_DECISIONS, CHUNK)):
            await set_faults(chunk)
            queue = iter(decisions[start : start + CHUNK])  # shared by the chunk's posters
            if CONCURRENT_DRAIN[dialect]:
                # the worker drains while the chunk is recorded (newer decisions arrive while older
                # pushes are in flight or answered lost), then delivers the rest of it
                drain = asyncio.create_task(world.gateway.worker.drain())
                await asyncio.gather(*(post_all(world, queue) for _ in range(POSTERS[dialect])))
                await drain
            else:
                await post_all(world, queue)
                await world.gateway.worker.drain()
        posted_at = time.perf_counter()
        # past the longest ladder step (36000 s, +20 % jitter) in one move: every retry is due next round
        rounds = await drain_until_settled(world, SETTLE_STEP)
        elapsed = time.perf_counter() - started

        statuses = await delivery_statuses(world)
        logs = {provider: (await world.inspect(provider))["requests"] for provider in PROVIDERS}
        sim_faults = {p: sum(1 for e in log if e["status"] in (429, 503)) for p, log in logs.items()}
        sent = {p: chaos[p].counts["forwarded"] + chaos[p].counts["connect_error"] for p in PROVIDERS}
        faulted = {
            p: sim_faults[p] + chaos[p].counts["connect_error"] + chaos[p].counts["lost_answer"] for p in PROVIDERS
        }
        checked = {p: len(pushes(p, log)) for p, log in logs.items()}
        share = sum(faulted.values()) / sum(sent.values())
        print(
            f"\nload [{dialect}]: {LOAD_DECISIONS} decisions, {LOAD_SUBJECTS} subjects; "
            f"recorded and drained in {posted_at - started:.1f} s, then {rounds} settle rounds; "
            f"total {elapsed:.1f} s wall; deliveries {dict(statuses)}; requests sent {sent}, "
            f"faulted {faulted} ({share:.1%}): chaos { ({p: dict(c.counts) for p, c in chaos.items()}) }; "
            f"pushes checked for staleness {checked}"
        )

        dead = (await world.gateway.store.outbox.list(status=DeliveryStatus.dead, limit=5)).items
        reasons = [(d.provider, d.last_status_code, d.last_error) for d in dead]
        assert set(statuses) <= FINAL, f"deliveries not delivered: {dict(statuses)}; dead because {reasons}"
        assert share >= 0.3, f"only {share:.1%} of requests faulted"  # the faults really were injected
        for provider, log in logs.items():
            assert len(log) < 10_000, f"{provider}'s request log overflowed: the stale check would be partial"
            assert len(log) <= chaos[provider].counts["forwarded"]  # refused connections never arrive
        stale = [line for provider in PROVIDERS for line in stale_pushes(provider, logs[provider])]
        assert stale == [], f"{len(stale)} stale overwrites, e.g. {stale[:5]}"
        await assert_providers_hold(world, expected)
    finally:
        await world.gateway.worker.stop()
        await world.control.aclose()


async def post_all(world: World, queue: Iterator[Posted]) -> None:
    for posted in queue:
        await world.gateway.record(posted.decision())


# -- 3. explicit out-of-order and duplicate decisions ----------------------------------------------------


async def record(world: World, posted: Posted) -> str:
    return (await world.gateway.record(posted.decision())).id


async def request_counts(world: World) -> dict[str, int]:
    return {provider: len((await world.inspect(provider))["requests"]) for provider in PROVIDERS}


def at(minutes: int) -> datetime:
    return NOW - timedelta(hours=1) + timedelta(minutes=minutes)


async def test_a_late_older_decision_is_superseded_in_the_ledger_and_sends_nothing(world: World) -> None:
    newer = Posted(
        "cust-late",
        (("email_marketing", "granted"), ("push_notifications", "denied"), ("sms_marketing", "granted")),
        at(30),
    )
    older = Posted("cust-late", (("email_marketing", "denied"), ("sms_marketing", "denied")), at(10))
    expected = Expected()
    for posted in (newer, older):
        expected.receive(posted)

    await record(world, newer)
    await world.gateway.worker.drain()
    before = await request_counts(world)

    late_id = await record(world, older)
    late = await world.gateway.store.ledger.decision(late_id)
    assert late is not None
    assert late.superseded_purposes == ["email_marketing", "sms_marketing"]
    assert late.effective_purposes == []
    assert {d.provider: d.status for d in late.deliveries} == dict.fromkeys(PROVIDERS, "skipped")
    await world.gateway.worker.drain()

    assert await request_counts(world) == before  # not one provider request for the late decision
    await assert_providers_hold(world, expected)
    history = await world.gateway.store.ledger.history("cust-late", 10)
    assert [d.id for d in history][0] == late_id and len(history) == 2  # kept in the ledger all the same


async def test_a_late_decision_only_sends_the_purposes_it_is_newest_for(world: World) -> None:
    await record(world, Posted("cust-mixed", (("email_marketing", "granted"), ("sms_marketing", "denied")), at(30)))
    await world.gateway.worker.drain()
    before = await request_counts(world)

    # older for email_marketing (superseded), but the first word on analytics (effective)
    late = Posted("cust-mixed", (("analytics", "granted"), ("email_marketing", "denied")), at(5))
    found = await world.gateway.store.ledger.decision(await record(world, late))
    assert found is not None
    assert found.superseded_purposes == ["email_marketing"] and found.effective_purposes == ["analytics"]
    await world.gateway.worker.drain()

    after = await request_counts(world)
    # analytics is an Intempt category only: Masivo and Wix get nothing, Intempt one POST for it
    assert after["masivo"] == before["masivo"] and after["wix"] == before["wix"]
    new = (await world.inspect("intempt"))["requests"][before["intempt"] :]
    assert [(r["body"]["category"], r["body"]["action"]) for r in new] == [("analytics", "accept")]
    held = await provider_states(world)
    assert {key[2]: value for key, value in held.items() if key[0] == "intempt"} == {
        "email": "accept",
        "sms": "reject",
        "analytics": "accept",
    }
    assert held[("masivo", "cust-mixed", "purposes")]["email_marketing"] is True
    assert held[("wix", "cust-mixed", "EMAIL")] == "CONFIRMED" and held[("wix", "cust-mixed", "PHONE")] == "REVOKED"


async def test_out_of_order_and_duplicates_before_a_drain_push_only_the_newest(world: World) -> None:
    subject = "cust-burst"
    burst = [
        Posted(subject, (("email_marketing", "denied"), ("sms_marketing", "granted")), at(40)),
        Posted(subject, (("email_marketing", "granted"), ("sms_marketing", "denied")), at(20)),  # older, late
        Posted(subject, (("email_marketing", "denied"), ("sms_marketing", "granted")), at(40)),  # duplicate
        Posted(subject, (("push_notifications", "granted"),), at(50)),
        Posted(subject, (("push_notifications", "pending"),), at(45)),  # older, late
    ]
    expected = Expected()
    for posted in burst:
        await record(world, posted)
        expected.receive(posted)
    await world.gateway.worker.drain()

    await assert_providers_hold(world, expected)
    logs = {provider: (await world.inspect(provider))["requests"] for provider in PROVIDERS}
    masivo = [r["body"]["consent"] for r in logs["masivo"] if r["method"] == "PATCH"]
    assert len(masivo) == 1  # coalesced: one push of the merged newest state, no intermediate
    assert masivo[0]["purposes"]["email_marketing"] is False and masivo[0]["purposes"]["push_notifications"] is True
    assert datetime.fromisoformat(masivo[0]["consent_timestamp"]) == at(50)
    intempt = sorted((r["body"]["category"], r["body"]["action"]) for r in logs["intempt"])
    assert intempt == [("email", "reject"), ("push", "accept"), ("sms", "accept")]
    wix_writes = [r for r in logs["wix"] if r["method"] != "GET"]
    assert sorted(r["body"]["marketingConsent"]["state"] for r in wix_writes) == ["CONFIRMED", "REVOKED"]

    # the same burst again, all of it late or duplicate now: nothing changes, nothing is sent
    before = await request_counts(world)
    for posted in burst:
        await record(world, posted)
    await world.gateway.worker.drain()
    assert await request_counts(world) == before
    await assert_providers_hold(world, expected)


async def test_a_late_older_decision_while_the_newer_one_is_still_retrying_never_reaches_the_provider(
    world: World,
) -> None:
    await world.faults("intempt", error_rate=1, status=503, seed=3)
    newer = Posted("cust-retry", (("email_marketing", "granted"), ("analytics", "denied")), at(30))
    older = Posted("cust-retry", (("email_marketing", "denied"), ("analytics", "granted")), at(10))
    newer_id = await record(world, newer)
    await world.gateway.worker.drain()
    assert (await world.statuses(newer_id))["intempt"] == "retrying"

    older_id = await record(world, older)
    assert (await world.statuses(older_id)) == dict.fromkeys(PROVIDERS, "skipped")
    await world.faults("intempt", error_rate=0)
    world.now += timedelta(hours=2)
    await world.gateway.worker.drain()

    assert (await world.statuses(newer_id))["intempt"] == "succeeded"
    expected = Expected()
    expected.receive(newer)
    expected.receive(older)
    await assert_providers_hold(world, expected)
    log = (await world.inspect("intempt"))["requests"]
    assert {(r["body"]["category"], r["body"]["action"]) for r in log} == {("email", "accept"), ("analytics", "reject")}
    assert stale_pushes("intempt", log) == []


# -- a push applied but never acknowledged (found by the load test) --


@pytest.fixture
async def chaos_world(store: Store) -> AsyncIterator[tuple[World, dict[str, ChaosTransport]]]:
    chaos: dict[str, ChaosTransport] = {}

    def wrap(name: str, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        chaos[name] = ChaosTransport(inner, seed=PROVIDERS.index(name))
        return chaos[name]

    world = World(store, wrap_transport=wrap)
    yield world, chaos
    await world.gateway.worker.stop()
    await world.control.aclose()


def _sms_or_phone(request: httpx.Request) -> bool:
    """Intempt's sms category and Wix's PHONE channel, whatever the request (get-by, PATCH, upsert)."""
    return b'"sms"' in request.content or b'"PHONE"' in request.content or b"type=PHONE" in request.url.query


@pytest.mark.parametrize("trigger", ["lost_answer", "partial_flow"])
async def test_a_push_applied_but_unacknowledged_is_not_mistaken_for_the_old_state(
    chaos_world: tuple[World, dict[str, ChaosTransport]], trigger: str
) -> None:
    """lost_answer: every provider applies "denied" but every answer is lost (at-least-once);
    partial_flow: Wix applies EMAIL and Intempt the email category, then the PHONE channel / sms
    category request is refused: a plain failure, nothing ambiguous. Then the person opts back in."""
    world, chaos = chaos_world
    subject = "cust-flip"
    granted = Posted(subject, (("email_marketing", "granted"), ("sms_marketing", "granted")), at(10))
    denied = Posted(subject, (("email_marketing", "denied"), ("sms_marketing", "denied")), at(20))
    granted_again = Posted(subject, (("email_marketing", "granted"),), at(30))
    expected = Expected()

    await record(world, granted)
    expected.receive(granted)
    await world.gateway.worker.drain()  # every provider holds and acknowledges "granted"

    for transport in chaos.values():
        if trigger == "lost_answer":
            transport.lost_answer_rate = 1.0
        else:
            transport.refuse = _sms_or_phone
    denied_id = await record(world, denied)
    expected.receive(denied)
    await world.gateway.worker.drain()
    retrying = PROVIDERS if trigger == "lost_answer" else ("wix", "intempt")
    assert {p: s for p, s in (await world.statuses(denied_id)).items() if s == "retrying"} == dict.fromkeys(
        retrying, "retrying"
    )
    held = await provider_states(world)  # the providers did apply "denied" to email
    assert held[("masivo", subject, "purposes")]["email_marketing"] is False
    assert held[("wix", subject, "EMAIL")] == "REVOKED"
    assert held[("intempt", subject, "email")] == "reject"

    for transport in chaos.values():
        transport.lost_answer_rate, transport.refuse = 0.0, None
    await record(world, granted_again)  # the person opts back in to email: the newest decision
    expected.receive(granted_again)
    world.now += timedelta(hours=2)  # past the first ladder step
    await world.gateway.worker.drain()

    statuses = await delivery_statuses(world)
    assert set(statuses) <= FINAL, statuses  # the gateway says: all delivered
    subject_view = await world.gateway.subject(subject)
    assert subject_view is not None
    assert {row.provider: row.status for row in subject_view.providers} == {
        "masivo": "in_sync",
        "wix": "in_sync",
        "intempt": "unobservable",  # no read API: acknowledged is all the gateway knows
    }
    # ...but the providers still hold email "denied": the push of "granted" was skipped
    await assert_providers_hold(world, expected)

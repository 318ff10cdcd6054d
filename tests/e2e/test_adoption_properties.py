"""An opt-out is never lost, whatever happens at the providers: a stateful property test.

Three subjects (two of them start on one shared email address) and the three simulators, on an
injected clock. Hypothesis interleaves API decisions (in and out of order, some changing the email),
changes made at Wix and Masivo behind the gateway's back (dated in the past, recently, in the future,
or echoing a write the gateway itself made there; on shared addresses too), provider outages,
read-back runs, erasure and time passing. The model here keeps every subject's newest genuine
decision per purpose: one made through the API, or a change made at a provider that passes the
README's rules (dated; not the gateway's own write, as the provider's request log shows it; at most
``max_clock_skew_s`` ahead of the read; newer than the gateway's decision; on an address the subject
holds alone, and held so since before that time; read while no push for the row was under way).

After every step the gateway's state equals the model's, and every read-back adopts exactly what the
rules say. After every settling step (outages over, dead deliveries replayed, a read-back, every
delivery final) Masivo and Intempt hold every newest genuine decision, Wix an opt-out at the address
of anyone who opted out and an opt-in only where all its holders opted in, and no address the
subjects left or an erased person had keeps an opt-in the gateway wrote.

CI runs ``EXAMPLES`` examples of up to ``STEPS`` steps on SQLite (about 40 s); with
``CONSENT_GATEWAY_LONG_PROPERTIES=1`` 250 examples of up to 60 (README, "Reconciliation").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from gateway.store import Store
from gateway.store.tables import deliveries
from schemas.api import UNDER_WAY
from schemas.consent import Decision
from tests.world import PROVIDERS, TCF, World, phone_of

LONG = bool(os.environ.get("CONSENT_GATEWAY_LONG_PROPERTIES"))
EXAMPLES, STEPS = (250, 60) if LONG else (20, 40)
SUBJECTS = ("s0", "s1", "s2")
PURPOSES = ("email_marketing", "push_notifications")
SHARED = "shared@example.com"
ADDRESSES = (SHARED, "s0@example.com", "s1@example.com", "s2@example.com", "moved@example.com")
START = {"s0": SHARED, "s1": SHARED, "s2": "s2@example.com"}
WIX_BASE = "/wix/marketing-consent/v1/marketing-consent"
FOREIGN = {"Authorization": "someone-elses-key", "wix-site-id": "site", "x-test-foreign": "1"}
ACTIVITY = {"CONFIRMED": "lastConfirmationActivity", "REVOKED": "lastRevokeActivity"}
CATEGORY = {"email_marketing": "email", "push_notifications": "push"}
KINDS = ("past", "recent", "future", "echo", "echo")  # an echo is the subtle one: twice as often
GENUINE = ("past", "recent")  # a future time or the gateway's own write is never a person's change
Adopted = dict[tuple[str, str, datetime], dict[str, str]]  # (subject, provider, time) -> purposes adopted


@dataclass(frozen=True)
class Injected:
    """A change the test made at a provider behind the gateway's back."""

    provider: str
    key: str  # Wix: the address; Masivo: the customer id
    held: Any  # Wix: (state, time); Masivo: the whole consent record
    when: datetime
    genuine: bool


def tally(what: str) -> None:
    """Count what happened in hypothesis' statistics (``--hypothesis-show-statistics``); a scripted run has none."""
    with contextlib.suppress(InvalidArgument):
        event(what)


def wix_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Adoption(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.TemporaryDirectory()
        self.store = Store.from_url(f"sqlite+aiosqlite:///{Path(self.folder.name) / 'gateway.db'}")
        self.world = World(self.store, retry={"attempts": 2, "ladder_s": [60, 600]})
        self.world.gateway.settings.reconcile.chunk = 10
        self.skew = timedelta(seconds=self.world.gateway.settings.max_clock_skew_s)
        self.genuine: dict[str, dict[str, tuple[datetime, str]]] = {s: {} for s in SUBJECTS}
        self.newest: dict[str, datetime] = {}  # the subject's newest decision: it owns the email
        self.email = dict(START)
        self.since: dict[tuple[str, str], datetime] = {}  # (subject, address): held with its company since
        self.ever: dict[str, set[str]] = {s: set() for s in SUBJECTS}
        self.erased: set[str] = set()
        self.down: set[str] = set()
        self.injected: list[Injected] = []
        self.masivo_cut: dict[str, int] = {}  # Masivo's log length when a change was adopted from it
        self.tick = 0

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            if self.newest:
                self.settle_all()
        finally:
            self.run(self.world.gateway.worker.stop())
            self.run(self.world.control.aclose())
            self.run(self.store.close())
            self.loop.close()
            self.folder.cleanup()

    # -- the model ---------------------------------------------------------------------------------

    def live(self) -> list[str]:
        return [s for s in SUBJECTS if s in self.newest and s not in self.erased]

    def holders(self, address: str) -> list[str]:
        return [s for s in self.live() if self.email[s] == address]

    def record(self, subject: str, purposes: dict[str, str], when: datetime, email: str | None) -> None:
        """What merging a decision does to the model: newest per purpose; the newest decision owns the email."""
        for purpose, state in purposes.items():
            if purpose not in self.genuine[subject] or when >= self.genuine[subject][purpose][0]:
                self.genuine[subject][purpose] = (when, state)
        if subject not in self.newest or when >= self.newest[subject]:
            if email is not None:
                self.move(subject, email)
            self.newest[subject] = when

    def move(self, subject: str, email: str) -> None:
        """The subject holds ``email`` now: wherever who holds an address changed, its clock starts again."""
        old = self.email[subject] if subject in self.newest else None
        if old == email:
            return
        self.email[subject] = email
        self.ever[subject].add(email)
        self.newest.setdefault(subject, self.world.now)
        self.restart({old, email} - {None})

    def restart(self, addresses: set[str | None]) -> None:
        for address in addresses:
            for holder in self.holders(str(address)):
                self.since[(holder, str(address))] = self.world.now

    # -- what a person does through the API ------------------------------------------------------------

    @initialize(states=st.lists(st.sampled_from(["granted", "denied"]), min_size=6, max_size=6))
    def start(self, states: list[str]) -> None:
        """Every subject decides both purposes an hour ago, delivered everywhere."""
        self.run(self.store.upgrade())
        for index, subject in enumerate(SUBJECTS):
            self.decide(subject, dict(zip(PURPOSES, states[2 * index : 2 * index + 2], strict=True)), 60, None)
        self.deliver()

    @rule(
        subject=st.sampled_from(SUBJECTS),
        purposes=st.dictionaries(st.sampled_from(PURPOSES), st.sampled_from(["granted", "denied"]), min_size=1),
        back=st.integers(0, 180),
        email=st.none() | st.sampled_from(ADDRESSES),
    )
    def decide(self, subject: str, purposes: dict[str, str], back: int, email: str | None) -> None:
        """A decision through the API, up to three hours late; some carry another email."""
        if subject in self.erased:
            return
        when = self.world.now - timedelta(minutes=back)
        address = email or self.email[subject]
        body = {
            "subject": {"id": subject, "email": address, "phone": phone_of(subject)},
            "purposes": purposes,
            "tcf_string": TCF,
            "occurred_at": when,
        }
        self.run(self.world.gateway.record(Decision.model_validate(body, strict=False)))
        self.record(subject, purposes, when, address)

    @rule(subject=st.sampled_from(SUBJECTS), purpose=st.sampled_from(PURPOSES), back=st.integers(1, 30))
    def late_decision_then_echo(self, subject: str, purpose: str, back: int) -> None:
        """The other purpose flips now and is delivered; then a flip of ``purpose`` decided before that arrives
        and is delivered (Masivo's time is now newer than that decision: the time of the gateway's own push);
        then Masivo goes back to the gateway's write before it. The case provenance is for."""
        if subject in self.erased or subject not in self.newest:
            return
        [other] = [p for p in PURPOSES if p != purpose]
        self.decide(subject, {other: self.flipped(subject, other)}, 0, None)
        self.deliver()
        self.decide(subject, {purpose: self.flipped(subject, purpose)}, back, None)
        self.deliver()
        self.change_at_masivo(subject, purpose, True, "echo")

    def flipped(self, subject: str, purpose: str) -> str:
        return "denied" if self.genuine[subject].get(purpose, (None, "denied"))[1] == "granted" else "granted"

    @rule(seconds=st.integers(1, 900))
    def time_passes(self, seconds: int) -> None:
        self.world.now += timedelta(seconds=seconds)

    @rule()
    def deliver(self) -> None:
        self.run(self.world.gateway.worker.drain())

    @rule(provider=st.sampled_from(PROVIDERS))
    def outage(self, provider: str) -> None:
        self.run(self.world.faults(provider, error_rate=1, status=503))
        self.down.add(provider)

    @rule(provider=st.sampled_from(PROVIDERS))
    def recovery(self, provider: str) -> None:
        self.run(self.world.faults(provider, error_rate=0))
        self.down.discard(provider)

    @precondition(lambda self: len(self.live()) > 1)
    @rule(subject=st.sampled_from(SUBJECTS))
    def erase(self, subject: str) -> None:
        if subject not in self.live():
            return
        self.world.now += timedelta(seconds=1)
        assert self.run(self.world.gateway.erasures.request(subject, "property")) is not None
        self.erased.add(subject)
        self.restart({self.email[subject]})

    # -- what happens at the providers behind the gateway's back ----------------------------------------

    def moment(self, kind: str) -> datetime:
        """A provider time half a second off the gateway's whole seconds: never one the gateway wrote."""
        offset = {
            "past": -timedelta(minutes=40 + 7 * self.tick % 120),
            "recent": timedelta(seconds=self.tick % 240),
            "future": self.skew + timedelta(days=1 + self.tick % 900),
        }[kind]
        self.tick += 1
        return self.world.now + offset + timedelta(milliseconds=500)

    @rule(
        where=st.sampled_from(SUBJECTS + ADDRESSES), state=st.sampled_from(list(ACTIVITY)), kind=st.sampled_from(KINDS)
    )
    def change_at_wix(self, where: str, state: str, kind: str) -> None:
        """A change at an address (a subject's id: its address now), as a person or another system makes it."""
        address = self.email[where] if where in SUBJECTS else where
        if "wix" in self.down:
            return
        if kind == "echo":  # the gateway's own write comes back: its newest one unlike what is there now
            held = {
                c["details"].get("email"): c["state"]
                for c in self.run(self.world.inspect("wix"))["state"]["consents"].values()
            }
            ours = [
                r["body"]["marketingConsent"]
                for r in self.wix_pushes()
                if r["body"]["marketingConsent"]["details"].get("email") == address
            ]
            stale = [consent for consent in ours if consent["state"] != held.get(address)] or ours
            if not stale:
                return
            consent = stale[-1]
            state, when = consent["state"], wix_time(consent[ACTIVITY[consent["state"]]]["updatedDate"])
        else:
            when = self.moment(kind)
        activity: dict[str, Any] = {"source": "OTHER", "updatedDate": when.isoformat()}
        if state == "CONFIRMED":
            activity["optInLevel"] = "SINGLE_CONFIRMATION"
        consent = {"details": {"type": "EMAIL", "email": address}, "state": state, ACTIVITY[state]: activity}
        request = self.world.control.post(f"{WIX_BASE}/upsert", json={"marketingConsent": consent}, headers=FOREIGN)
        assert self.run(request).status_code == 200
        self.injected.append(Injected("wix", address, (state, when), when, kind in GENUINE))
        tally(f"wix: {kind} {state}")

    @rule(
        subject=st.sampled_from(SUBJECTS),
        purpose=st.sampled_from(PURPOSES),
        allowed=st.booleans(),
        kind=st.sampled_from(KINDS),
    )
    def change_at_masivo(self, subject: str, purpose: str, allowed: bool, kind: str) -> None:
        held = self.run(self.world.inspect("masivo"))["state"]["consents"].get(subject)
        if held is None or "masivo" in self.down:
            return
        if kind == "echo":
            ours = [push["body"]["consent"] for push in self.masivo_pushes(subject)]  # its newest unlike what is there
            record = ([r for r in ours if r["purposes"] != held["purposes"]] or ours)[-1]
            when = datetime.fromisoformat(record["consent_timestamp"])
        else:
            when = self.moment(kind)
            record = held | {"purposes": held["purposes"] | {purpose: allowed}, "consent_timestamp": when.isoformat()}
        self.run(self.masivo_patch(subject, record))
        self.injected.append(Injected("masivo", subject, record, when, kind in GENUINE))
        tally(f"masivo: {kind}")

    async def masivo_patch(self, subject: str, record: dict[str, Any]) -> None:
        control = self.world.control
        token = (await control.get("/masivo/auth/authorize", headers={"x-api-key": "someone"})).json()["data"]
        headers = {"Authorization": f"Bearer {token}", "x-test-foreign": "1"}
        path = f"/masivo/customers/{subject}/consent"
        assert (await control.patch(path, json={"consent": record}, headers=headers)).status_code == 200

    def wix_pushes(self) -> list[dict[str, Any]]:
        """The gateway's upserts and updates at Wix, oldest first."""
        log = self.run(self.world.inspect("wix"))["requests"]
        return [
            r
            for r in log
            if "x-test-foreign" not in r["headers"] and isinstance(r["body"], dict) and "marketingConsent" in r["body"]
        ]

    def masivo_pushes(self, subject: str, since: int = 0) -> list[dict[str, Any]]:
        """The gateway's PATCHes of one customer's consent, from log position ``since``, oldest first."""
        log = self.run(self.world.inspect("masivo"))["requests"][since:]
        mine = f"/customers/{subject}/consent"
        return [
            r
            for r in log
            if r["method"] == "PATCH" and r["path"].endswith(mine) and "x-test-foreign" not in r["headers"]
        ]

    # -- read-back runs ------------------------------------------------------------------------------

    @rule(delivered=st.booleans())
    def read_back(self, delivered: bool = False) -> None:
        """A run over every readable provider (after the worker delivered what was due, or not): it adopts
        exactly what the rules say, and nothing else."""
        if delivered:
            self.deliver()
        self.world.now += timedelta(seconds=1)
        expected = self.expected_adoptions()
        reconciler = self.world.gateway.reconciler
        queued = self.run(reconciler.start(None, None))
        claimed = self.run(self.store.runs.claim(self.world.now, 60))
        assert claimed is not None and claimed.id == queued.id
        self.run(reconciler.execute(claimed, self.world.gateway.worker))
        adopted = self.adopted_since(queued.created_at)
        assert adopted == expected, f"adopted {adopted}, the rules say {expected}"
        for _, provider, _ in adopted:
            tally(f"adopted from {provider}")
        log_length = len(self.run(self.world.inspect("masivo"))["requests"])
        for (subject, provider, when), purposes in sorted(expected.items()):
            if provider == "masivo":
                self.masivo_cut[subject] = log_length  # it holds the person's own state now
            self.record(subject, purposes, when, None)

    def expected_adoptions(self) -> Adopted:
        busy = self.under_way()
        consents = self.run(self.world.inspect("wix"))["state"]["consents"].values()
        wix = {c["details"].get("email"): c for c in consents}
        masivo = self.run(self.world.inspect("masivo"))["state"]["consents"]
        found: Adopted = {}
        for subject in self.live():
            if "wix" not in self.down and (subject, "wix") not in busy:
                found |= self.from_wix(subject, wix.get(self.email[subject]))
            if "masivo" not in self.down and (subject, "masivo") not in busy:
                found |= self.from_masivo(subject, masivo.get(subject))
        return found

    def from_wix(self, subject: str, consent: dict[str, Any] | None) -> Adopted:
        """A genuine change at the subject's address, held by it alone since before that time (an opt-in
        by more than the allowed skew), newer than its decision and not in the future, is adopted."""
        address = self.email[subject]
        change = self.still_held("wix", address, consent)
        mine = self.genuine[subject].get("email_marketing")
        if change is None or mine is None or len(self.holders(address)) > 1:
            return {}
        state = "granted" if change.held[0] == "CONFIRMED" else "denied"
        if state == mine[1] or change.when <= mine[0] or not self.plausible(change.when):
            return {}
        margin = self.skew if state == "granted" else timedelta(0)
        if change.when <= self.since[(subject, address)] + margin:
            return {}
        return {(subject, "wix", change.when): {"email_marketing": state}}

    def from_masivo(self, subject: str, record: dict[str, Any] | None) -> Adopted:
        """Masivo keeps one time per record: each purpose held otherwise than the gateway wants is a
        change dated by it, unless it is an opt-in the gateway wrote there since its last acknowledged
        push (the provider's request log says what the gateway wrote, and what was acknowledged)."""
        change = self.still_held("masivo", subject, record)
        if change is None or record is None or not self.plausible(change.when):
            return {}
        pushes = self.masivo_pushes(subject, self.masivo_cut.get(subject, 0))
        acknowledged = [i for i, push in enumerate(pushes) if (push["status"] or 500) < 300]
        holding = pushes[acknowledged[-1] :] if acknowledged else pushes
        adopted = {}
        for purpose in PURPOSES:
            mine = self.genuine[subject].get(purpose)
            allowed = record["purposes"].get(purpose) is True
            if allowed == (mine is not None and mine[1] == "granted"):
                continue
            if allowed and any(push["body"]["consent"]["purposes"].get(purpose) is True for push in holding):
                continue
            if mine is None or change.when > mine[0]:
                adopted[purpose] = "granted" if allowed else "denied"
        return {(subject, "masivo", change.when): adopted} if adopted else {}

    def still_held(self, provider: str, key: str, held: Any) -> Injected | None:
        """The newest change the test made at ``key``, if it is genuine and the provider holds exactly it."""
        for change in reversed(self.injected):
            if change.provider == provider and change.key == key:
                if not change.genuine or held is None:
                    return None
                if provider == "masivo":
                    return change if held == change.held else None
                state = held["state"]
                moment = wix_time(held[ACTIVITY[state]]["updatedDate"]) if state in ACTIVITY else None
                return change if (state, moment) == change.held else None
        return None

    def plausible(self, when: datetime) -> bool:
        return when <= self.world.now + self.skew

    def under_way(self) -> set[tuple[str, str]]:
        async def query() -> set[tuple[str, str]]:
            statuses = [status.value for status in UNDER_WAY]
            wanted = select(deliveries.c.subject_id, deliveries.c.provider).where(deliveries.c.status.in_(statuses))
            async with self.store.engine.connect() as conn:
                return {(subject, provider) for subject, provider in await conn.execute(wanted)}

        found: set[tuple[str, str]] = self.run(query())
        return found

    def adopted_since(self, moment: datetime) -> Adopted:
        found: Adopted = {}
        for subject in SUBJECTS:
            for entry in self.run(self.store.ledger.history(subject, 500)):
                source = entry.decision.source
                if entry.received_at >= moment and source.startswith("provider:"):
                    purposes = {p: s.value for p, s in entry.decision.purposes.items()}
                    found[(subject, source.partition(":")[2], entry.decision.occurred_at)] = purposes
        return found

    # -- checks --------------------------------------------------------------------------------------

    @invariant()
    def the_gateway_holds_every_newest_genuine_decision(self) -> None:
        for subject in self.live():
            state = self.run(self.store.ledger.subject_state(subject))
            assert state is not None
            held = {purpose: record.state.value for purpose, record in state.purposes.items()}
            assert held == {p: s for p, (_, s) in self.genuine[subject].items()}, subject

    @precondition(lambda self: bool(self.newest))
    @rule()
    def settle(self) -> None:
        self.settle_all()

    def settle_all(self) -> None:
        """Outages end, dead deliveries are replayed, every delivery ends, a read-back catches up with what
        changed at the providers and what it queued is delivered too; then the providers are checked."""
        for provider in sorted(self.down):
            self.recovery(provider)
        self.run(self.store.outbox.replay(self.world.now))
        self.deliver_everything()
        self.read_back()
        self.deliver_everything()
        self.providers_honour_every_decision()

    def deliver_everything(self) -> None:
        gateway = self.world.gateway
        for _ in range(8):
            self.run(gateway.worker.drain())
            while self.run(gateway.erasures.step()):
                pass
            if not self.under_way():
                return
            self.world.now += timedelta(hours=1)
        raise AssertionError(f"deliveries still under way: {sorted(self.under_way())}")

    def providers_honour_every_decision(self) -> None:
        masivo = self.run(self.world.inspect("masivo"))["state"]["effective_purposes"]
        intempt = self.run(self.world.inspect("intempt"))["state"]["consents"].get("acme", {}).get("web", {})
        consents = self.run(self.world.inspect("wix"))["state"]["consents"].values()
        wix = {c["details"].get("email"): c["state"] for c in consents}
        for subject in self.live():
            for purpose, (_, state) in self.genuine[subject].items():
                granted = state == "granted"
                assert masivo[subject][purpose] is granted, ("masivo", subject, purpose, state)
                assert intempt[subject][CATEGORY[purpose]]["action"] == ("accept" if granted else "reject"), subject
            if "email_marketing" not in self.genuine[subject]:
                continue
            address = self.email[subject]
            states = {self.genuine[h].get("email_marketing", (None, "granted"))[1] for h in self.holders(address)}
            if "denied" in states:
                assert wix.get(address) == "REVOKED", ("an opt-out at wix", subject, address)
            elif len(self.holders(address)) == 1:
                assert wix.get(address) == "CONFIRMED", ("an opt-in at wix", subject, address)
        held = {self.email[s] for s in self.live()}
        for subject in SUBJECTS:
            for address in self.ever[subject] - held:
                if self.last_wix_writer(address) == "gateway":  # else the test itself wrote there last
                    assert wix.get(address) in (None, "REVOKED"), ("left or erased", subject, address)

    def last_wix_writer(self, address: str) -> str | None:
        """Who last wrote the consent of ``address`` at Wix: the gateway, the test ("foreign"), or nobody."""
        for entry in reversed(self.run(self.world.inspect("wix"))["requests"]):
            body = entry["body"] if isinstance(entry["body"], dict) else {}
            details = body.get("marketingConsent", body).get("details", {})
            if details.get("email") == address and entry["method"] in ("POST", "PATCH"):
                return "foreign" if "x-test-foreign" in entry["headers"] else "gateway"
        return None


Adoption.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAdoption = Adoption.TestCase
TestAdoption.pytestmark = [pytest.mark.xdist_group("heavy")]  # one worker runs the long tests

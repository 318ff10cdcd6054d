"""Crash safety with real processes: `consent-gateway simulate` on a loopback port, a real
`consent-gateway worker` process on a real store, decisions recorded from this process.

- A worker SIGKILLed mid-stream leaves leased ("sending") rows behind; once the lease runs
  out the next worker delivers them, and every provider ends up with every subject's newest
  state: nothing lost, nothing dead (SQLite, and PostgreSQL where it is reachable).
- SIGTERM drains: the worker stops claiming, lets the deliveries in flight finish and exits 0.

The worker reaches the simulators through a gate in this process that holds provider requests
until the test opens it: "mid-stream" and "in flight" are states the test waits for, never a race
against the machine's speed, and every wait is on an event with a generous limit (``PATIENCE``),
so a loaded machine makes these tests slower, never red.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import Settings
from gateway.service import Gateway
from gateway.store.tables import deliveries
from schemas.consent import Decision
from tests.live import served
from tests.processes import CLI, Process, Processes, clean_env, free_port, until
from tests.world import PROVIDERS, TCF

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SECRETS = {
    "CG_E2E_MASIVO_KEY": "masivo-key-crash-0123456789",
    "CG_E2E_WIX_KEY": "wix-key-crash-0123456789",
    "CG_E2E_WIX_SITE": "site-crash",
    "CG_E2E_INTEMPT_KEY": "pfx.intempt-crash-secret-0123456789",
}
FINAL = {"succeeded", "skipped", "dead"}
PATIENCE = 300.0  # seconds: a limit on waiting for an event, reached only when something is broken
HOP_BY_HOP = {"host", "connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive"}
SHUTTING_DOWN = "Waiting for application shutdown."  # uvicorn, just before the worker's lifespan ends


class Gate:
    """A proxy in front of the simulators: each provider's first ``passes`` requests go through, the
    ones after are held until :meth:`open` (then forwarded, even when their sender died meanwhile).
    Masivo's token exchange always goes through: each push in flight may fetch a token of its own."""

    def __init__(self, upstream: str, passes: Mapping[str, int] | None = None) -> None:
        self.upstream = upstream
        self.passes: Counter[str] = Counter(passes or {})
        self.held: Counter[str] = Counter()  # waiting at the gate, per provider
        self.unanswered = 0  # arrived and not yet answered by the simulators
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.client: httpx.AsyncClient | None = None
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self.forward, methods=methods)], lifespan=self.connected)

    @asynccontextmanager
    async def connected(self, _app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=PATIENCE) as self.client:
            yield

    def open(self) -> None:
        self.opened.set()

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        provider = request.url.path.strip("/").partition("/")[0]
        with self.lock:
            self.unanswered += 1
            exchange = request.url.path.endswith("/auth/authorize")
            hold = self.passes[provider] <= 0 and not exchange and not self.opened.is_set()
            self.passes[provider] -= not exchange
            self.held[provider] += hold
        try:
            if hold:
                await asyncio.to_thread(self.opened.wait)
                with self.lock:
                    self.held[provider] -= 1
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            url = httpx.URL(f"{self.upstream}{request.url.path}", query=request.url.query.encode())
            assert self.client is not None
            answer = await self.client.request(request.method, url, headers=headers, content=body)
        finally:
            with self.lock:
                self.unanswered -= 1
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(answer.content, answer.status_code, headers=kept)


@contextmanager
def gated(simulators: httpx.AsyncClient, passes: Mapping[str, int] | None = None) -> Iterator[tuple[Gate, str]]:
    """A :class:`Gate` in front of ``simulators`` on a loopback port; opened whatever happens."""
    gate = Gate(str(simulators.base_url).rstrip("/"), passes)
    try:
        with served(gate.app, free_port()) as base:
            yield gate, base
            gate.open()
    finally:
        gate.open()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def simulators(processes: Processes) -> AsyncIterator[httpx.AsyncClient]:
    """A client on `consent-gateway simulate` running in its own process."""
    base = await processes.simulators()
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


def write_config(
    path: Path, database_url: str, simulators: str, *, lease_s: float, concurrency: int, timeout_s: float
) -> Path:
    """The TOML a deployment would write: secrets only as ${ENV} references."""
    path.write_text(
        f"""\
database_url = {json.dumps(database_url)}

[worker]
lease_s = {lease_s}
poll_interval_s = 0.1
batch_size = 50
http_port = {free_port()}

[retry]
attempts = 3
initial_s = 0.05
max_s = 0.5
ladder_s = [0.5, 1.0, 2.0]

[providers.masivo]
base_url = "{simulators}/masivo"
api_key = "${{CG_E2E_MASIVO_KEY}}"
timeout_s = {timeout_s}
concurrency = {concurrency}

[providers.wix]
base_url = "{simulators}/wix"
api_key = "${{CG_E2E_WIX_KEY}}"
site_id = "${{CG_E2E_WIX_SITE}}"
timeout_s = {timeout_s}
concurrency = {concurrency}
rate_per_minute = 600000.0
bulk_size = 0  # one push per delivery, each held at the gate on its own (a killed bulk push: test_scale_out)

[providers.intempt]
base_url = "{simulators}/intempt"
api_key = "${{CG_E2E_INTEMPT_KEY}}"
org = "acme"
project = "web"
timestamp_unit = "s"
timeout_s = {timeout_s}
concurrency = {concurrency}
"""
    )
    return path


@pytest.fixture
def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Writes the config; this process loads the very same file (secrets from its environment)."""
    for key in [key for key in os.environ if key.startswith("CONSENT_GATEWAY_")]:
        monkeypatch.delenv(key)
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)

    def make(
        database_url: str, simulators: str, *, lease_s: float, concurrency: int, timeout_s: float = PATIENCE
    ) -> tuple[Path, Settings]:
        """``timeout_s`` is the providers': a request held at the gate must not time out while the test waits."""
        path = write_config(
            tmp_path / "gateway.toml",
            database_url,
            simulators,
            lease_s=lease_s,
            concurrency=concurrency,
            timeout_s=timeout_s,
        )
        monkeypatch.setenv("CONSENT_GATEWAY_CONFIG", str(path))
        return path, Settings()

    yield make


@pytest.fixture
async def recorder() -> AsyncIterator[list[Gateway]]:
    """Gateways of this test process (store + adapters, no worker); closed at the end."""
    made: list[Gateway] = []
    yield made
    for gateway in made:
        await gateway.stop()


# -- helpers -------------------------------------------------------------------------------


def start_worker(processes: Processes, config: Path) -> Process:
    return processes.start("worker", [CLI, "worker", "--config", str(config)], clean_env(SECRETS))


def decision(index: int, minutes: int, **purposes: str) -> Decision:
    subject = f"cust-{index:02d}"
    return Decision.model_validate(
        {
            "subject": {"id": subject, "email": f"{subject}@example.com", "phone": f"+1415555{index:04d}"},
            "purposes": purposes,
            "tcf_string": TCF,
            "occurred_at": T0 + timedelta(minutes=minutes),
            "source": "web",
        },
        strict=False,
    )


async def rows(gateway: Gateway, *, recheck: bool = False) -> dict[str, tuple[str, str, str]]:
    """Every delivery but the rechecks (or, with ``recheck``, only those): id -> (status, provider, subject)."""
    query = select(deliveries.c.id, deliveries.c.status, deliveries.c.provider, deliveries.c.subject_id)
    async with gateway.store.engine.connect() as conn:
        found = await conn.execute(query.where(deliveries.c.recheck == int(recheck)))
        return {row[0]: (row[1], row[2], row[3]) for row in found}


async def counts(gateway: Gateway) -> Counter[str]:
    return Counter(status for status, _, _ in (await rows(gateway)).values())


async def inspect(simulators: httpx.AsyncClient, provider: str) -> dict[str, Any]:
    response = await simulators.get(f"/{provider}/_inspect")
    assert response.status_code == 200, response.text
    return response.json()["state"]


async def expire_leases(gateway: Gateway) -> None:
    """Every lease ends now: the worker processes' clock cannot be moved, the stored leases can."""
    sending = deliveries.c.status == "sending"
    async with gateway.store.engine.begin() as conn:
        await conn.execute(update(deliveries).where(sending).values(lease_until=datetime(2000, 1, 1, tzinfo=UTC)))


async def nothing_unanswered(gate: Gate) -> bool:
    return gate.unanswered == 0


async def inject_latency(simulators: httpx.AsyncClient, latency_ms: int) -> None:
    for provider in PROVIDERS:
        response = await simulators.post(f"/{provider}/_faults", json={"latency_ms": latency_ms})
        assert response.status_code == 200, response.text


# -- 1. SIGKILL mid-stream -----------------------------------------------------------------

SUBJECTS = 30  # two decisions each before the crash (60), one more each after it
# Requests the gate lets through before it holds a provider's: ten Masivo pushes (ten deliveries succeed), a
# few of Wix's and Intempt's requests (some of their pushes stop half-way, as a crash leaves them).
PASSES = {"masivo": 10, "wix": 5, "intempt": 5}


async def test_a_worker_killed_mid_stream_loses_nothing(
    database_url: str,
    processes: Processes,
    simulators: httpx.AsyncClient,
    configure: Any,
    recorder: list[Gateway],
) -> None:
    began = time.monotonic()
    with gated(simulators, PASSES) as (gate, base):
        await crash_and_recover(database_url, processes, simulators, configure, recorder, gate, base, began)


async def crash_and_recover(
    database_url: str,
    processes: Processes,
    simulators: httpx.AsyncClient,
    configure: Any,
    recorder: list[Gateway],
    gate: Gate,
    base: str,
    began: float,
) -> None:
    # Leases that outlast any stall of a loaded machine: a live worker never loses one to a late heartbeat
    # (it would claim its own row again); the dead worker's run out when the test says so (below).
    config, settings = configure(database_url, base, lease_s=PATIENCE, concurrency=8)
    gateway = Gateway(settings)
    recorder.append(gateway)
    await gateway.start(run_worker=False)
    await inject_latency(simulators, 150)

    # 60 decisions: per subject an opt-in and a newer email opt-out, for half of them the
    # older one arriving second (it must not win).
    for index in range(SUBJECTS):
        opt_in = decision(index, 0, email_marketing="granted", sms_marketing="granted", push_notifications="granted")
        opt_out = decision(index, 10, email_marketing="denied")
        for one in (opt_in, opt_out) if index % 2 else (opt_out, opt_in):
            await gateway.record(one)
    total = len(await rows(gateway))
    assert total == SUBJECTS * len(PROVIDERS)  # coalesced: one delivery per subject×provider

    first = start_worker(processes, config)

    async def mid_stream() -> bool:  # every lane stuck at the gate: nothing moves until the kill
        seen = await counts(gateway)
        assert first.alive, processes.logs()
        return seen["succeeded"] >= 10 and seen["sending"] >= 3 and all(gate.held[p] for p in PROVIDERS)

    await until(mid_stream, PATIENCE, "some deliveries succeeded and some in flight", why=processes.logs)
    first.signal(signal.SIGKILL)
    assert await first.wait(PATIENCE) == -signal.SIGKILL
    killed_at = time.monotonic()
    # What the killed worker had sent still lands (its answer lost), before anything newer is sent.
    gate.open()
    await until(lambda: nothing_unanswered(gate), PATIENCE, "the held requests answered", why=processes.logs)

    after_kill = await rows(gateway)
    stranded = {key for key, (status, _, _) in after_kill.items() if status == "sending"}
    assert stranded, "the killed worker left no delivery in flight: nothing was tested"
    assert Counter(status for status, _, _ in after_kill.values())["succeeded"] < total

    # While the leases of the dead worker are still held, every subject decides once more:
    # email back on, SMS off. These join the pending rows or queue behind the stranded ones.
    for index in range(SUBJECTS):
        await gateway.record(decision(index, 20, email_marketing="granted", sms_marketing="denied"))
    await expire_leases(gateway)  # the dead worker's leases run out, as if their time had passed

    second = start_worker(processes, config)

    async def all_final() -> bool:
        assert second.alive, processes.logs()
        return all(status in FINAL for status, _, _ in (await rows(gateway)).values())

    recovery = await until(all_final, PATIENCE, "every delivery final after the restart", every=0.1, why=processes.logs)

    final = await rows(gateway)
    statuses = Counter(status for status, _, _ in final.values())
    assert statuses["dead"] == 0, final
    before_crash = {key: value for key, value in final.items() if key in after_kill}
    assert {status for status, _, _ in before_crash.values()} == {"succeeded"}, before_crash
    assert all(final[key][0] == "succeeded" for key in stranded)
    # What the dead worker sent may still land after the pushes that took over: each of its pairs is
    # pushed whole once more, twice the providers' timeout later (README: an unanswered request).
    rechecks = await rows(gateway, recheck=True)
    assert {status for status, _, _ in rechecks.values()} == {"pending"}
    assert sorted((provider, subject) for _, provider, subject in rechecks.values()) == sorted(
        (provider, subject) for key, (_, provider, subject) in after_kill.items() if key in stranded
    )
    # A delivery queued after the crash may find its newest state already pushed by the
    # stranded one it queued behind: then it is skipped, never lost.
    assert {status for status, _, _ in final.values()} <= {"succeeded", "skipped"}

    # Every provider holds every subject's newest state: email on (the newest decision),
    # SMS off, push on (from the opt-in, never touched since).
    masivo = (await inspect(simulators, "masivo"))["effective_purposes"]
    intempt = (await inspect(simulators, "intempt"))["consents"]["acme"]["web"]
    wix = (await inspect(simulators, "wix"))["consents"].values()
    wix_state = {
        (c["details"]["type"], c["details"].get("email") or c["details"].get("phone")): c["state"] for c in wix
    }
    assert len(wix_state) == len(list(wix)) == 2 * SUBJECTS, "one Wix consent per address: no duplicates"
    for index in range(SUBJECTS):
        subject = f"cust-{index:02d}"
        assert masivo[subject]["email_marketing"] is True and masivo[subject]["push_notifications"] is True, subject
        assert masivo[subject]["coupon_campaigns"] is False, subject
        assert {category: intempt[subject][category]["action"] for category in ("email", "sms", "push")} == {
            "email": "accept",
            "sms": "reject",
            "push": "accept",
        }, subject
        assert wix_state[("EMAIL", f"{subject}@example.com")] == "CONFIRMED", subject
        assert wix_state[("PHONE", f"+1415555{index:04d}")] == "REVOKED", subject

    second.signal(signal.SIGTERM)
    assert await second.wait(PATIENCE) == 0, processes.logs()
    assert "Traceback" not in second.tail(10_000)
    print(
        f"\n[{database_url.partition(':')[0]}] stranded by SIGKILL: {len(stranded)}/{total}; "
        f"recovered in {recovery:.2f} s after restart ({time.monotonic() - killed_at:.2f} s after the kill); "
        f"test {time.monotonic() - began:.2f} s"
    )


# -- 2. SIGTERM drains ---------------------------------------------------------------------


async def test_sigterm_lets_in_flight_deliveries_finish_and_exits_0(
    tmp_path: Path,
    processes: Processes,
    simulators: httpx.AsyncClient,
    configure: Any,
    recorder: list[Gateway],
) -> None:
    began = time.monotonic()
    with gated(simulators) as (gate, base):
        await drain_on_sigterm(tmp_path, processes, simulators, configure, recorder, gate, base, began)


async def drain_on_sigterm(
    tmp_path: Path,
    processes: Processes,
    simulators: httpx.AsyncClient,
    configure: Any,
    recorder: list[Gateway],
    gate: Gate,
    base: str,
    began: float,
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'drain.db'}"
    # A long lease: nothing may be re-claimed here, only drained.
    config, settings = configure(database_url, base, lease_s=60.0, concurrency=4)
    gateway = Gateway(settings)
    recorder.append(gateway)
    await gateway.start(run_worker=False, migrate=True)
    await inject_latency(simulators, 500)
    for index in range(20):
        await gateway.record(decision(index, 0, email_marketing="granted", sms_marketing="denied"))

    worker = start_worker(processes, config)

    async def in_flight() -> bool:  # held at the gate: every lane full, nothing can finish before SIGTERM
        assert worker.alive, processes.logs()
        return all(gate.held[provider] for provider in PROVIDERS)

    await until(in_flight, PATIENCE, "deliveries in flight in every lane", why=processes.logs)
    sending = {key for key, (status, _, _) in (await rows(gateway)).items() if status == "sending"}
    assert {provider for key, (_, provider, _) in (await rows(gateway)).items() if key in sending} == set(PROVIDERS)
    worker.signal(signal.SIGTERM)
    signalled = time.monotonic()

    async def shutting_down() -> bool:  # the line uvicorn logs as it hands over to the worker's own shutdown
        return SHUTTING_DOWN in worker.log.read_text(errors="replace") or not worker.alive

    await until(shutting_down, PATIENCE, "the worker's shutdown after SIGTERM", why=processes.logs)
    gate.open()  # the deliveries in flight finish now: a worker still claiming would start more
    code = await worker.wait(PATIENCE)
    drained = time.monotonic() - signalled
    assert code == 0, f"exit {code} after SIGTERM\n{processes.logs()}"
    assert "Traceback" not in worker.tail(10_000), processes.logs()

    final = await rows(gateway)
    statuses = Counter(status for status, _, _ in final.values())
    assert statuses["sending"] == 0, final
    assert all(final[key][0] == "succeeded" for key in sending), {key: final[key] for key in sending}
    assert statuses["pending"] > 0, "the worker kept claiming after SIGTERM instead of only draining"
    assert set(statuses) <= {"succeeded", "pending"}, statuses
    assert statuses["succeeded"] == len(sending), "nothing was claimed after SIGTERM, only what was in flight finished"

    # "succeeded" means the provider really holds it.
    held = {
        "masivo": set((await inspect(simulators, "masivo"))["consents"]),
        "intempt": set((await inspect(simulators, "intempt"))["consents"].get("acme", {}).get("web", {})),
        "wix": {
            c["details"].get("email", "").partition("@")[0]
            for c in (await inspect(simulators, "wix"))["consents"].values()
            if c["details"]["type"] == "EMAIL"
        },
    }
    for status, provider, subject in final.values():
        if status == "succeeded":
            assert subject in held[provider], (provider, subject)
    print(
        f"\n[sqlite] SIGTERM with {len(sending)} in flight: exit 0 after {drained:.2f} s; "
        f"{statuses['succeeded']} succeeded, {statuses['pending']} left pending; test {time.monotonic() - began:.2f} s"
    )

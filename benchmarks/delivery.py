"""``delivery``: decisions fully delivered per second by `consent-gateway worker` with every provider
at 20 ms and ``--concurrency`` C, against what C and the flows allow.

The worker starts first, on an empty store; once its start-up is over (its CPU time stands still)
the decisions (new subjects) are recorded in batches, and the clock runs from the first request
any provider sees to every delivery final. A provider lane keeps at most C requests in flight, so
it finishes at most C / (flow length x latency) decisions a second, flow length being the requests
one decision costs there (the simulators' logs over the run / decisions); the slowest provider
bounds it. With W worker processes the bound is W times that (``workers`` reuses this
measurement). ``cpu_s_per_push``: the workers' CPU seconds from the end of start-up to the end,
over the requests the providers saw: the worker's own cost per request, which a busy machine
slows down but does not inflate. ``simulators_cpu_s_per_request``: the same for the simulators,
which share the machine's cores with the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, func, select, text

from adapters.base import Adapter, Bulk, drive
from benchmarks.common import (
    PROVIDERS,
    Bench,
    Database,
    cpu_seconds,
    logged,
    per,
    ratio,
    record,
    set_latency,
    start_gateway,
    start_workers,
    until_delivered,
    write_config,
)
from benchmarks.fanout import checked, subject_state
from gateway.config import build_adapters, load_settings
from gateway.delivery.worker import client_sizes
from gateway.store import Store
from gateway.store.tables import deliveries
from schemas.consent import SubjectState
from tests.processes import Process

LATENCY_MS = 20.0
TARGETS = {"ratio": ">= 0.8"}


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    args = bench.args
    results = await measure(bench, db, "delivery", args.delivery_decisions, 1, args.concurrency)
    high = args.high_concurrency
    results[f"concurrency_{high}"] = await measure(
        bench, db, f"delivery-{high}", args.delivery_decisions * high // args.concurrency, 1, high
    )
    return results | {"targets": TARGETS}


async def measure(
    bench: Bench, db: Database, part: str, decisions: int, workers: int, concurrency: int
) -> dict[str, Any]:
    """Deliver ``decisions`` with ``workers`` worker processes at ``concurrency`` each."""
    url = await db.fresh(part)
    await history(url, bench.args.delivery_history)
    config = write_config(bench.folder / f"{db.kind}-{part}.toml", url, bench.simulators, concurrency)
    async with bench.processes(f"{db.kind}-{part}") as procs:
        gateway = await start_gateway(procs, config, worker=False)
        await set_latency(bench.simulators, dict.fromkeys(PROVIDERS, LATENCY_MS))
        started = start_workers(procs, config, workers)
        idle = await started_up(started)
        simulating = sum(cpu_seconds(pid) for pid in bench.simulator_pids)
        await record(gateway.url, decisions, prefix="d")
        done_at = await until_delivered(url, timeout=60 + decisions * 0.2)
        cpu = sum(cpu_seconds(process.pid) for process in started) - idle
        simulated = sum(cpu_seconds(pid) for pid in bench.simulator_pids) - simulating
    requests = {provider: await logged(bench.simulators, provider) for provider in PROVIDERS}
    bare = await without_gateway(config, decisions, concurrency) if workers == 1 else {}
    began = min(entry["at"] for entries in requests.values() for entry in entries)
    flows = {provider: len(entries) / decisions for provider, entries in requests.items()}
    sent = sum(len(entries) for entries in requests.values())
    return (
        figures(decisions, done_at - began, flows, workers, concurrency)
        | {
            "cpu_s_per_push": per(cpu, sent),
            "simulators_cpu_s_per_request": per(simulated, sent),
            "requests": sent,
            "history": bench.args.delivery_history,
            "statuses": await statuses(url),
        }
        | bare
    )


async def started_up(processes: list[Process], settle_s: float = 0.5) -> float:
    """Wait until the processes' CPU time stands still (start-up over, idle on an empty store); their
    CPU seconds then."""
    before = -1.0
    while True:
        now = sum(cpu_seconds(process.pid) for process in processes)
        if now - before < 0.02:
            return now
        before = now
        await asyncio.sleep(settle_s)


def figures(decisions: int, seconds: float, flows: dict[str, float], workers: int, concurrency: int) -> dict[str, Any]:
    limits = {provider: workers * concurrency / (flow * LATENCY_MS / 1000) for provider, flow in flows.items()}
    bound = min(limits, key=lambda provider: limits[provider])
    per_s = decisions / seconds
    return {
        "per_s": round(per_s, 1),
        "limit_per_s": round(limits[bound], 1),
        "ratio": ratio(per_s, limits[bound]),
        "limit": f"{bound}: {workers * concurrency} in flight / ({flows[bound]:.2f} requests x {LATENCY_MS:g} ms)",
        "flow_lengths": {provider: round(flow, 3) for provider, flow in flows.items()},
        "decisions": decisions,
        "seconds": round(seconds, 2),
        "workers": workers,
        "concurrency": concurrency,
        "latency_ms": LATENCY_MS,
    }


async def without_gateway(config: Path, decisions: int, concurrency: int) -> dict[str, Any]:
    """The same flows for as many new subjects by a bare client in this process: the same adapters, an
    httpx client per provider with ``concurrency`` requests in flight, Wix's first syncs in bulk as the
    worker sends them, and no store, no retries, no logs. What one Python process on this machine can
    push at all: the ceiling of the worker's ratio. ``bare_cpu_s_per_request``: this process's CPU."""
    adapters = build_adapters(load_settings(config))
    states = [subject_state(f"{BARE + n}", BARE + n) for n in range(decisions)]
    sent = dict.fromkeys(adapters, 0)
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(bare_lane(adapter, states, concurrency, sent) for adapter in adapters.values()))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    bare = figures(decisions, seconds, {name: n / decisions for name, n in sent.items()}, 1, concurrency)
    return {
        "bare_per_s": bare["per_s"],
        "bare_ratio": bare["ratio"],
        "bare_cpu_s_per_request": per(cpu, sum(sent.values())),
    }


async def bare_lane(adapter: Adapter, states: list[SubjectState], concurrency: int, sent: dict[str, int]) -> None:
    """One provider's flows, ``concurrency`` at a time (Wix's in bulk flows of ``bulk_size`` subjects), over
    clients of at most 8 connections, as the worker splits them (one httpcore pool of 32 costs more than
    its requests)."""
    flows: Iterator[Generator[httpx.Request, httpx.Response, Any]] = (
        (adapter.push_many(states[at : at + adapter.bulk_size]) for at in range(0, len(states), adapter.bulk_size))
        if isinstance(adapter, Bulk) and adapter.bulk_size > 0
        else (adapter.push(state, {}, {}) for state in states)
    )
    auth = adapter.auth()

    async def client(connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=adapter.settings.base_url, auth=auth, limits=limits) as http:
            send = checked(adapter, http)

            async def counted(request: httpx.Request) -> httpx.Response:
                sent[adapter.name] += 1
                return await send(request)

            async def one_at_a_time() -> None:
                for flow in flows:
                    await drive(flow, counted)

            await asyncio.gather(*(one_at_a_time() for _ in range(connections)))

    await asyncio.gather(*(client(size) for size in client_sizes(concurrency)))


BARE = 9_000_000  # the bare client's subjects: keys no load round uses
PROVIDER_NAMES = " UNION ALL ".join(f"SELECT '{provider}' AS name" for provider in PROVIDERS)
HISTORY = [  # ``count`` earlier subjects, each with one decision delivered to every provider
    "INSERT INTO decisions (id, subject_id, occurred_at, received_at, body, effective, superseded)"
    " SELECT 'h-' || i, 'h-' || i, :at, :at, '{}', '{}', '{}' FROM n",
    "INSERT INTO deliveries (id, decision_id, subject_id, provider, status, attempts, reschedules, next_attempt_at,"
    " recheck, created_at, updated_at) SELECT 'h-' || i || '-' || p.name, 'h-' || i, 'h-' || i, p.name, 'succeeded',"
    f" 1, 0, :at, 0, :at, :at FROM n CROSS JOIN ({PROVIDER_NAMES}) AS p",
    "INSERT INTO provider_state (subject_id, provider, acknowledged, memo, writes, fence, acknowledged_at)"
    f" SELECT 'h-' || i, p.name, '{{}}', '{{}}', '{{}}', 0, :at FROM n CROSS JOIN ({PROVIDER_NAMES}) AS p",
]


async def history(url: str, count: int) -> None:
    """``count`` decisions delivered before the run, as a store in production holds (``--delivery-history``):
    a lookup that walks a table instead of the rows it needs shows here."""
    if count <= 0:
        return
    at = bindparam("at", datetime(2026, 1, 1, tzinfo=UTC), type_=deliveries.c.created_at.type)
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {int(count)}) "
    store = Store.from_url(url)
    try:
        async with store.engine.begin() as conn:
            for statement in HISTORY:
                await conn.execute(text(numbers + statement).bindparams(at))
    finally:
        await store.close()


async def statuses(url: str) -> dict[str, int]:
    """How the deliveries ended: anything but succeeded means the figure hides failures."""
    store = Store.from_url(url)
    try:
        async with store.engine.connect() as conn:
            query = (
                select(deliveries.c.status, func.count())
                .where(deliveries.c.id.not_like("h-%"))  # the run's, not the history's
                .group_by(deliveries.c.status)
            )
            return {str(status): int(count) for status, count in await conn.execute(query)}
    finally:
        await store.close()

"""``fanout``: how long one decision takes to be final at every provider, against the least it
can take. Each provider answers after its own latency (50, 85, 120 ms… in name order: intempt,
masivo, wix); decisions are sent one at a time to `serve` (API and worker in one process), each for a new subject.

The limit is the slowest provider's chain: the requests its flow must make one after another
(read from the simulators' request logs for one decision: the most requests that did not
overlap in time) times its latency. A naive script that runs the three providers' flows one
after another (the same adapters, no gateway) shows what not fanning out in parallel costs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

import httpx

from adapters.base import Adapter, drive, expected, sender
from benchmarks.common import (
    PROVIDERS,
    Bench,
    Database,
    client,
    logged,
    longest_chain,
    ratio,
    set_latency,
    start_gateway,
    write_config,
)
from benchmarks.load import percentile
from benchmarks.payloads import decision
from gateway.config import build_adapters, load_settings
from schemas.consent import SubjectState

LATENCY_MS = {provider: 50.0 + 35.0 * index for index, provider in enumerate(PROVIDERS)}  # one slowest
TARGETS = {"p50_ratio": "<= 1.15", "p99_ratio": "<= 1.5", "sequential_ratio": "none (the naive comparison)"}


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    url = await db.fresh("fanout")
    config = write_config(bench.folder / f"{db.kind}-fanout.toml", url, bench.simulators)
    await set_latency(bench.simulators, LATENCY_MS)
    async with bench.processes(f"{db.kind}-fanout") as procs:
        gateway = await start_gateway(procs, config, worker=True)
        async with client(gateway.url) as http:
            await fan_out(http, "fwarm", 0)  # Masivo's token and the connections: not measured
            began = time.time()
            times = [await fan_out(http, "f0", 1)]
            chains = {provider: await chain(bench, provider, began, time.time()) for provider in PROVIDERS}
            times += [await fan_out(http, f"f{n}", n + 1) for n in range(1, bench.args.fanout_decisions)]
    naive = await sequential(config, bench.args.sequential_decisions)
    return figures(times, naive, chains)


async def fan_out(http: httpx.AsyncClient, subject_id: str, index: int) -> float:
    """Milliseconds from sending a decision to the gateway's answer that every delivery is final
    (``?wait=``: no polling load on the process that delivers). It includes recording the
    decision, a few ms, so it errs against the gateway."""
    began = time.perf_counter()
    answer = await http.post("/v1/consents", params={"wait": 30}, json=decision(subject_id, index))
    elapsed = (time.perf_counter() - began) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"decision {subject_id} not final after 30 s: {answer.status_code} {answer.text[:500]}")
    return elapsed


async def chain(bench: Bench, provider: str, began: float, ended: float) -> int:
    requests = [entry for entry in await logged(bench.simulators, provider) if began <= entry["at"] <= ended]
    return longest_chain(requests)


async def sequential(config: Path, count: int) -> list[float]:
    """Milliseconds per decision when each provider's flow runs after the previous one ends
    (the first decision warms up and is not counted)."""
    adapters = build_adapters(load_settings(config))
    clients = {
        name: httpx.AsyncClient(base_url=a.settings.base_url, auth=a.auth(), timeout=30) for name, a in adapters.items()
    }
    times = []
    try:
        for n in range(count + 1):
            state = subject_state(f"q{n}", 10_000 + n)
            began = time.perf_counter()
            for provider in PROVIDERS:
                await push(adapters[provider], clients[provider], state)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        for http in clients.values():
            await http.aclose()
    return times[1:]


async def push(adapter: Adapter, http: httpx.AsyncClient, state: SubjectState) -> None:
    """One provider's flow, each answer checked as the worker checks it."""
    await drive(adapter.push(state, {}, {}), checked(adapter, http))


def checked(adapter: Adapter, http: httpx.AsyncClient) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """Send through ``http``, each answer checked as the worker checks it (an error raises)."""
    send = sender(http)

    async def checked_send(request: httpx.Request) -> httpx.Response:
        response = await send(request)
        if response.status_code not in expected(request):
            adapter.check(response)
        return response

    return checked_send


def subject_state(subject_id: str, index: int) -> SubjectState:
    """The merged state a new subject has after :func:`decision`: what the worker would push."""
    made = decision(subject_id, index)
    when = made["occurred_at"]
    return SubjectState.model_validate(
        {
            "subject_id": subject_id,
            "email": made["subject"]["email"],
            "phone": made["subject"]["phone"],
            "purposes": {purpose: {"state": state, "occurred_at": when} for purpose, state in made["purposes"].items()},
            "tcf_string": made["tcf_string"],
            "occurred_at": when,
            "source": made["source"],
        }
    )


def figures(times: list[float], naive: list[float], chains: dict[str, int]) -> dict[str, Any]:
    paths = {provider: chains[provider] * LATENCY_MS[provider] for provider in PROVIDERS}
    slowest = max(paths, key=lambda provider: paths[provider])
    limit = paths[slowest]
    p50, p99 = median(times), percentile(times, 0.99)
    return {
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "limit_ms": limit,
        "p50_ratio": ratio(p50, limit),
        "p99_ratio": ratio(p99, limit),
        "sequential_ms": round(median(naive), 1),
        "sequential_ratio": ratio(median(naive), limit),
        "limit": f"{slowest}: {chains[slowest]} requests in a row x {LATENCY_MS[slowest]:g} ms",
        "chains": chains,
        "latency_ms": LATENCY_MS,
        "decisions": len(times),
        "targets": TARGETS,
    }

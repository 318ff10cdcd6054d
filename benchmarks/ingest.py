"""``ingest``: durable decisions accepted per second by ``POST /v1/consents`` (a new subject in each,
delivery paused) against the framework ceiling (``benchmarks/ceiling.py``: the same server and
settings, parsing the same JSON and answering 202), same load, same run, in alternating rounds."""

from __future__ import annotations

import asyncio
import sys
from statistics import median
from typing import Any

from benchmarks.common import (
    Bench,
    Database,
    Server,
    cpu_seconds,
    peak_rss_mb,
    per,
    ratio,
    start_gateway,
    start_server,
    write_config,
)
from benchmarks.load import Load
from benchmarks.payloads import key_prefix

CEILING = "benchmarks.ceiling"
TARGETS = {
    "ratio": ">= 0.6",
    "p99_ms": "<= 50 at 32 connections",
    "cpu_s_per_decision": "none set (reported: steadier than rps on a shared machine)",
}


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    url = await db.fresh("ingest")
    config = write_config(bench.folder / f"{db.kind}-ingest.toml", url, bench.simulators)
    async with bench.processes(f"{db.kind}-ingest") as procs:
        gateway, ceiling = await asyncio.gather(
            start_gateway(procs, config, worker=False),
            start_server(
                procs, "ceiling", lambda port: [sys.executable, "-m", CEILING, "--port", str(port)], "/healthz"
            ),
        )
        rounds = await alternate(bench, {"gateway": gateway, "ceiling": ceiling})
        rss = peak_rss_mb(gateway.process.pid)
    return figures(bench, rounds) | {"peak_rss_mb": rss}


async def alternate(bench: Bench, servers: dict[str, Server]) -> dict[str, list[dict[str, Any]]]:
    """A warm-up each, then ``--rounds`` rounds each, the order flipped every round so neither
    side always runs first (a machine shared with other work drifts)."""
    args = bench.args
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    index = {name: number for number, name in enumerate(servers)}
    for name, server in servers.items():
        warm = Load(
            f"{server.url}/v1/consents", args.connections, min(1.0, args.seconds), prefix=key_prefix(0, index[name])
        )
        await bench.load(warm)
    for number in range(1, args.rounds + 1):
        order = list(servers) if number % 2 else list(reversed(servers))
        for name in order:
            url, prefix = f"{servers[name].url}/v1/consents", key_prefix(number, index[name])
            load = Load(url, args.connections, args.seconds, prefix=prefix)
            rounds[name].append(await measured(bench, servers[name], load))
    return rounds


async def measured(bench: Bench, server: Server, load: Load) -> dict[str, Any]:
    """One round's summary, with the CPU seconds the server spent on it (``cpu_s``)."""
    before = cpu_seconds(server.process.pid)
    found = await bench.load(load)
    return found | {"cpu_s": cpu_seconds(server.process.pid) - before}


def figures(bench: Bench, rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    gateway, ceiling = rounds["gateway"], rounds["ceiling"]
    rps = median(r["ok_per_s"] for r in gateway)
    ceiling_rps = median(r["ok_per_s"] for r in ceiling)
    return {
        "rps": round(rps, 1),
        "ceiling_rps": round(ceiling_rps, 1),
        "ratio": ratio(rps, ceiling_rps),
        "p50_ms": median(r["p50_ms"] for r in gateway),
        "p99_ms": median(r["p99_ms"] for r in gateway),
        "ceiling_p99_ms": median(r["p99_ms"] for r in ceiling),
        "cpu_s_per_decision": per(sum(r["cpu_s"] for r in gateway), sum(r["ok"] for r in gateway)),
        "ceiling_cpu_s_per_request": per(sum(r["cpu_s"] for r in ceiling), sum(r["ok"] for r in ceiling)),
        "not_accepted": sum(r["requests"] - r["ok"] for r in gateway),
        "connections": bench.args.connections,
        "rounds": {name: [r["ok_per_s"] for r in found] for name, found in rounds.items()},
        "seconds_per_round": bench.args.seconds,
        "targets": TARGETS,
    }

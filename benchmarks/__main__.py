"""One benchmark harness: ``python -m benchmarks all`` (or parts by name) prints ONE JSON object with
every figure next to its target. See benchmarks/README.md for what each figure means.

    python -m benchmarks all
    python -m benchmarks ingest fanout --database sqlite
    python -m benchmarks delivery --database postgresql+asyncpg://postgres@127.0.0.1:5432/mine

Without ``--database`` every part runs on SQLite and, when it answers, on PostgreSQL (a database
of the harness's own, dropped and created again for each part).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks import backfill, batch, delivery, events, fanout, groups, ingest, reconciliation, workers
from benchmarks.common import DEFAULT_POSTGRES, Bench, Database, start_simulators, unreachable
from benchmarks.load import GENERATORS, describe, generator_name
from gateway.redaction import configure_logging

Part = Callable[[Bench, Database], Awaitable[dict[str, Any]]]
PARTS: dict[str, Part] = {
    "ingest": ingest.run,
    "batch": batch.run,
    "groups": groups.run,
    "fanout": fanout.run,
    "delivery": delivery.run,
    "workers": workers.run,
    "reconciliation": reconciliation.run,
    "backfill": backfill.run,
    "events": events.run,
}
COMPARED = {"ingest": "rps", "batch": "decisions_per_s", "delivery": "per_s"}  # postgresql / sqlite


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", default=["all"], choices=["all", *PARTS], help="default: all")
    parser.add_argument(
        "--database",
        action="append",
        help="sqlite (fresh files), postgresql (the default server), or a URL; repeatable. "
        "Default: sqlite and postgresql",
    )
    parser.add_argument("--load-generator", choices=GENERATORS, default="auto", help="auto: wrk when installed")
    parser.add_argument("--logs", type=Path, help="keep every process's log here (default: a temporary folder)")
    scale = parser.add_argument_group("sizes (defaults fit `all` in under 5 minutes on 2 cores)")
    scale.add_argument("--connections", type=int, default=32, help="ingest: keep-alive connections")
    scale.add_argument("--seconds", type=float, default=2.0, help="ingest: seconds per round")
    scale.add_argument("--rounds", type=int, default=3, help="ingest: rounds each, gateway and ceiling")
    scale.add_argument("--batch-decisions", type=int, default=100_000, help="batch: decisions, 1,000 per request")
    scale.add_argument("--batch-max-seconds", type=float, default=20.0, help="batch: start no request after; 0: none")
    scale.add_argument("--group-decisions", type=int, default=640, help="groups: decisions per group size")
    scale.add_argument("--fanout-decisions", type=int, default=20, help="fanout: decisions timed, one at a time")
    scale.add_argument("--sequential-decisions", type=int, default=5, help="fanout: decisions the naive script sends")
    scale.add_argument("--delivery-decisions", type=int, default=200, help="delivery: decisions delivered")
    scale.add_argument("--concurrency", type=int, default=4, help="delivery: per provider (the default setting)")
    scale.add_argument(
        "--delivery-history", type=int, default=0, help="delivery: earlier decisions already delivered, in the store"
    )
    scale.add_argument(
        "--high-concurrency", type=int, default=32, help="delivery: per provider, again (decisions scaled to match)"
    )
    scale.add_argument("--workers-decisions", type=int, default=150, help="workers: decisions per worker count")
    scale.add_argument("--workers-concurrency", type=int, default=8, help="workers: per provider and worker")
    scale.add_argument("--view-subjects", type=int, default=100_000, help="reconciliation: subjects in the view")
    scale.add_argument("--read-subjects", type=int, default=500, help="reconciliation: subjects read back")
    scale.add_argument("--events-subjects", type=int, default=100, help="events: opt-outs made at Wix, one at a time")
    scale.add_argument("--backfill-subjects", type=int, default=10_000, help="backfill: subjects sent to Wix")
    scale.add_argument("--backfill-seconds", type=float, default=60.0, help="backfill: stop measuring after")
    args = parser.parse_args(argv)
    args.parts = list(PARTS) if "all" in args.parts else list(dict.fromkeys(args.parts))
    args.database = [_url(value) for value in args.database or ["sqlite", "postgresql"]]
    return args


def _url(value: str) -> str:
    return {"sqlite": "sqlite+aiosqlite://", "postgresql": DEFAULT_POSTGRES}.get(value, value)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    generator = generator_name(args.load_generator)
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "parts": args.parts,
        "load_generator": describe(generator),
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
    }
    with tempfile.TemporaryDirectory(prefix="consent-gateway-bench-") as scratch:
        logs = args.logs or Path(scratch) / "logs"
        bench = Bench(args, Path(scratch), logs, generator)
        async with bench.processes("simulators") as procs:
            delivered = args.delivery_decisions * max(1, args.high_concurrency // args.concurrency)
            log_limit = max(10_000, 12 * max(delivered, args.workers_decisions, args.fanout_decisions))
            servers = await start_simulators(procs, log_limit)
            bench.simulators = {provider: server.url for provider, server in servers.items()}
            bench.simulator_pids = [server.process.pid for server in servers.values()]
            for url in args.database:
                db = Database(url, Path(scratch))
                results[db.kind] = await run_store(bench, db)
    results |= compared(results)
    results["logs"] = {"kept_in": str(args.logs) if args.logs else None, "errors_and_warnings": bench.findings}
    results["seconds"] = round(time.perf_counter() - began, 1)
    return results


async def run_store(bench: Bench, db: Database) -> dict[str, Any]:
    """Every chosen part on one store; a part that fails says why and the others still run."""
    if db.kind == "postgresql" and (reason := await unreachable(db.url.render_as_string(hide_password=False))):
        return {"skipped": reason}
    found: dict[str, Any] = {}
    for name in bench.args.parts:
        began = time.perf_counter()
        try:
            found[name] = await PARTS[name](bench, db)
        except Exception as error:  # reported in the JSON, never hidden
            found[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
        found[name]["took_s"] = round(time.perf_counter() - began, 1)
    if "ingest" in found or "batch" in found:
        found["rss_mb"] = {
            "gateway": found.get("ingest", {}).get("peak_rss_mb"),
            "gateway_batch": found.get("batch", {}).get("peak_rss_mb"),
            "targets": {"gateway": "none set (reported: peak RSS, VmHWM, under the ingest load)"},
        }
    return found


def compared(results: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL's figures over SQLite's, where both ran."""
    sqlite, postgres = results.get("sqlite", {}), results.get("postgresql", {})
    both = {
        f"{part}.{key}": round(postgres[part][key] / sqlite[part][key], 2)
        for part, key in COMPARED.items()
        if sqlite.get(part, {}).get(key) and postgres.get(part, {}).get(key)
    }
    return {"postgresql_over_sqlite": both} if both else {}


def run(argv: list[str]) -> None:
    args = parse(argv)
    configure_logging(level=logging.WARNING)
    print(json.dumps(asyncio.run(main(args)), indent=2))


if __name__ == "__main__":
    run(sys.argv[1:])

"""``batch``: ``--batch-decisions`` decisions (new subjects, default 100,000) through
``POST /v1/consents:batch`` in requests of 1,000, one after another over one connection (an
import), delivery paused. No request starts after ``--batch-max-seconds`` (default 20, the
target): a gateway that slow is ``complete: false`` and its ``projected_seconds`` tell how far
off it is, without spending the run's five minutes on it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from benchmarks.common import Bench, Database, cpu_seconds, peak_rss_mb, per, scalar, start_gateway, write_config
from benchmarks.load import Load
from gateway.store.tables import decisions

PER_REQUEST = 1000
TARGETS = {
    "seconds": "<= 20 for 100,000 decisions",
    "projected_seconds": "<= 20 for 100,000 decisions (the same as seconds when complete)",
    "decisions_per_s": ">= 5000 (100,000 in 20 s)",
    "peak_rss_mb": "none set (reported)",
    "cpu_s_per_decision": "none set (reported: steadier than decisions_per_s on a shared machine)",
}


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    args = bench.args
    per_request = min(PER_REQUEST, args.batch_decisions)
    asked = args.batch_decisions // per_request * per_request
    url = await db.fresh("batch")
    config = write_config(bench.folder / f"{db.kind}-batch.toml", url, bench.simulators)
    async with bench.processes(f"{db.kind}-batch") as procs:
        gateway = await start_gateway(procs, config, worker=False)
        load = Load(
            f"{gateway.url}/v1/consents:batch",
            1,
            requests=asked // per_request,
            max_seconds=args.batch_max_seconds,
            prefix="b",
            batch=per_request,
        )
        cpu_before = cpu_seconds(gateway.process.pid)
        sent = await bench.load(load)  # always the asyncio client: wrk cannot send a fixed number
        cpu_s = cpu_seconds(gateway.process.pid) - cpu_before
        rss = peak_rss_mb(gateway.process.pid)
    recorded = await scalar(url, select(func.count()).select_from(decisions))
    per_s = recorded / sent["seconds"]
    return {
        "seconds": sent["seconds"],
        "decisions": recorded,
        "asked": asked,
        "complete": recorded == asked,
        "projected_seconds": round(asked / per_s, 1) if per_s else None,
        "decisions_per_s": round(per_s, 1),
        "requests": sent["requests"],
        "not_ok_requests": sent["requests"] - sent["ok"],
        "cpu_s_per_decision": per(cpu_s, recorded),
        "peak_rss_mb": rss,
        "targets": TARGETS,
    }

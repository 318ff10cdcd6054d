"""``workers``: delivery throughput with 1 and with 3 `consent-gateway worker` processes on one
PostgreSQL (SQLite serves one process, so there it is skipped).

The measurement is ``delivery``'s (decisions recorded first, then the workers start, the clock
runs from the first provider request to every delivery final, simulators at 20 ms in processes
of their own, no request budget), with ``--workers-concurrency`` per provider and worker; the
same number of decisions, a fresh database and reset simulators for each count.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import Bench, Database, ratio
from benchmarks.delivery import measure

TARGETS = {"scale_up_3_over_1": "none set (reported; on 2 shared cores the processes compete for CPU)"}


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    if db.kind != "postgresql":
        return {"skipped": "needs PostgreSQL: SQLite serves one process"}
    args = bench.args
    results: dict[str, Any] = {}
    for count in (1, 3):
        results[f"workers_{count}"] = await measure(
            bench, db, f"workers-{count}", args.workers_decisions, count, args.workers_concurrency
        )
    results["scale_up_3_over_1"] = ratio(results["workers_3"]["per_s"], results["workers_1"]["per_s"])
    return results | {"targets": TARGETS}

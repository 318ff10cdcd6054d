"""``groups``: what a group commit of the record path costs, by the group's size. ``Ledger.record_many``
is called directly, with no HTTP, in a process of its own (``python -m benchmarks.groups SPEC``), for
groups of 1, 4, 10 and 32 new subjects. A group pays a cost of its own (its statements, BEGIN and
COMMIT) whatever its size, and under ingest load most groups are small: this part measures that cost
apart from the HTTP path's."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.child import json_from
from benchmarks.common import Bench, Database, write_config
from benchmarks.payloads import decision
from gateway.cli.common import gateway, settings
from gateway.service import Gateway
from gateway.store.ledger import Pending
from schemas.consent import Decision

SIZES = (1, 4, 10, 32)
WARM_UP = 5  # groups of each size before the timed ones: compiled-statement caches, pages
TARGETS = {"ms_per_group": "none set (reported: the cost a group pays whatever its size)"}


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    url = await db.fresh("groups")
    config = write_config(bench.folder / f"{db.kind}-groups.toml", url, bench.simulators)
    spec = json.dumps({"config": str(config), "decisions": bench.args.group_decisions})
    return figures(await json_from("the group commits", "benchmarks.groups", spec)) | {"targets": TARGETS}


def figures(ms_per_decision: dict[str, float]) -> dict[str, Any]:
    """The median CPU ms a decision by group size, and the two parts of a group's cost fitted from the
    smallest and the largest size: ``cost(n) = ms_per_group + n * ms_per_decision``."""
    small, large = SIZES[0], SIZES[-1]
    cost_small, cost_large = small * ms_per_decision[str(small)], large * ms_per_decision[str(large)]
    each = (cost_large - cost_small) / (large - small)
    return {
        "cpu_ms_per_decision": ms_per_decision,
        "ms_per_group": round(cost_small - small * each, 3),
        "ms_per_decision": round(each, 3),
    }


async def measure(built: Gateway, decisions: int) -> dict[str, float]:
    """CPU ms a decision (this process's, COMMIT's thread included), the median over groups, by size."""
    context = built.decision_context()
    made = 0

    async def group(size: int) -> float:
        nonlocal made
        items = [
            Pending(Decision.model_validate_json(json.dumps(decision(f"g-{made + n}", made + n)), context=context))
            for n in range(size)
        ]
        made += size
        began = time.process_time()
        await built.store.ledger.record_many(items, built.adapters, built.clock())
        return (time.process_time() - began) / size

    found = {}
    for size in SIZES:
        for _ in range(WARM_UP):
            await group(size)
        found[str(size)] = round(1000 * median([await group(size) for _ in range(max(1, decisions // size))]), 3)
    await built.store.close()
    return found


def main() -> None:
    spec = json.loads(sys.argv[1])
    built = gateway(settings(Path(spec["config"])), api=True)  # it checks the schema with a loop of its own
    print(json.dumps(asyncio.run(measure(built, spec["decisions"]))))


if __name__ == "__main__":
    main()

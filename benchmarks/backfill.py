"""``backfill``: ``--backfill-subjects`` N subjects (an email and a phone each) backfilled to Wix at its
documented budget of 200 requests a minute, through `consent-gateway serve` (the API queues the
backfill) and `consent-gateway worker` (its chores drive it, its lanes send the pushes), against the
Wix simulator.

The subjects are recorded while Wix is disabled, then Wix is enabled and the backfill asked for;
the clock runs from the first Wix request to the backfill ``done``, or stops at
``--backfill-seconds``. Each subject is two Wix consents (EMAIL, PHONE): the items. A budget of B
requests a minute moves at most ``bulk_size`` x B items a minute (one full bulk upsert per
request); the ratio is what was achieved over that. Single pushes cost requests per item, so the
figure is far below 1 until the adapter sends first syncs in bulk (``bulk_size``, when it has one).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PROVIDERS,
    Bench,
    Database,
    client,
    logged,
    provider_settings,
    ratio,
    record,
    set_latency,
    start_gateway,
    start_workers,
    toml_value,
)
from benchmarks.payloads import TOKEN
from gateway.http.auth import hash_token

BUDGET = 200.0  # Wix: "200 requests per minute per app instance"
BULK_MAX = 100  # the Wix simulator's most items in one bulk upsert (Wix documents none)
TERMS = 2  # EMAIL and PHONE: Wix consents per subject
TARGETS = {"ratio": "none set (reported: items/min over bulk_size x 200/min)"}


def write_config(path: Path, database_url: str, simulators: dict[str, str], *, wix: bool) -> Path:
    """Wix alone enabled at its documented budget (``wix``), or every provider but Wix (recording)."""
    lines = [f"database_url = {json.dumps(database_url)}", "[[tokens]]", 'name = "bench"']
    lines += [f'sha256 = "{hash_token(TOKEN)}"', "[worker]", "http_port = 0"]
    for name, values in provider_settings(simulators, rate_per_minute=0.0).items():
        chosen = values | {"enabled": (name == "wix") == wix}
        chosen |= {"rate_per_minute": BUDGET} if name == "wix" else {}
        lines += [f"[providers.{name}]", *(f"{key} = {toml_value(value)}" for key, value in chosen.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    subjects, limit_s = bench.args.backfill_subjects, bench.args.backfill_seconds
    url = await db.fresh("backfill")
    folder = bench.folder
    recording = write_config(folder / f"{db.kind}-backfill-record.toml", url, bench.simulators, wix=False)
    backfilling = write_config(folder / f"{db.kind}-backfill.toml", url, bench.simulators, wix=True)
    await set_latency(bench.simulators, dict.fromkeys(PROVIDERS, 0.0))
    async with bench.processes(f"{db.kind}-backfill") as procs:
        gateway = await start_gateway(procs, recording, worker=False)
        await record(gateway.url, subjects, prefix="b")
        gateway.process.kill()
        gateway = await start_gateway(procs, backfilling, worker=False)
        start_workers(procs, backfilling, 1)
        async with client(gateway.url) as http:
            asked = (await http.post("/v1/providers/wix/backfills", json={})).raise_for_status().json()
            began = time.time()
            deadline = time.monotonic() + limit_s
            while (found := (await http.get(f"/v1/backfills/{asked['id']}")).json())["status"] != "done":
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            ended = time.time()
    requests = await logged(bench.simulators, "wix")
    return figures(found, requests, began, ended, subjects) | {"targets": TARGETS}


def figures(
    backfill: dict[str, Any], requests: list[dict[str, Any]], began: float, ended: float, subjects: int
) -> dict[str, Any]:
    start = min((entry["at"] for entry in requests), default=began)
    minutes = max(ended - start, 1e-6) / 60
    items = sum(_items(entry) for entry in requests)
    writes = sum(1 for entry in requests if _items(entry))
    per_min = items / minutes
    done = backfill["outcomes"].get("succeeded", 0)
    return {
        "subjects": subjects,
        "finished": backfill["status"] == "done",
        "succeeded": done,
        "outcomes": backfill["outcomes"],
        "wall_s": round(ended - start, 1),
        "projected_wall_s": round((ended - start) * subjects / done, 1) if done else None,
        "wix_requests": len(requests),
        "wix_write_requests": writes,
        "items": items,
        "items_per_request": round(items / len(requests), 2) if requests else 0.0,
        "items_per_min": round(per_min, 1),
        "bulk_size": BULK_MAX,
        "budget_per_min": BUDGET,
        "ratio": ratio(per_min, BULK_MAX * BUDGET),
        "items_per_subject": TERMS,
    }


def _items(entry: dict[str, Any]) -> int:
    """Consents a logged Wix request wrote: a bulk upsert's items, a single upsert's one, a read's none."""
    if entry.get("method") != "POST" or not str(entry.get("path", "")).endswith("upsert"):
        return 0
    body = entry.get("body")
    return len(body.get("info", [])) if isinstance(body, dict) and "info" in body else 1

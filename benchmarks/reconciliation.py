"""Reconciliation figures: the drift view over many stored subjects, and a read-back run against
simulators at a set latency, each measured against its limit.

    python -m benchmarks.reconciliation [--subjects 100000] [--read-subjects 10000] [--database URL]

- ``view``: every row of the drift view (subjects × 3 providers, with counts) computed from a
  store holding ``--subjects`` subjects, in a fresh process: seconds and peak RSS. Targets
  ≤ 10 s and ≤ 200 MB at 100,000 subjects.
- ``readback``: a run over ``--read-subjects`` subjects, one provider at a time, simulators in
  their own processes at ``--latency-ms``. Masivo reads one customer per request, so its limit
  is ``concurrency / latency`` requests a second; Wix pages 100 subjects per query per channel
  under its request budget, so its limit is ``rate_per_minute / 60``. Target ≥ 0.8 of each.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from benchmarks.workers import answering
from gateway.config import Settings
from gateway.redaction import configure_logging
from gateway.service import Gateway
from gateway.snapshot import subject_state
from gateway.tables import decisions, deliveries, observations, provider_state, subject_purposes, subjects

CLI = str(Path(sys.executable).with_name("consent-gateway"))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
PURPOSES = {"email_marketing": "granted", "sms_marketing": "denied", "push_notifications": "granted"}


def settings(database_url: str, simulators: dict[str, str], args: argparse.Namespace) -> Settings:
    return Settings(
        database_url=database_url,
        providers={
            "masivo": {
                "base_url": f"{simulators['masivo']}/masivo",
                "api_key": "masivo-key-0123456789",
                "concurrency": args.concurrency,
                "drift_policy": "report_only",
            },
            "wix": {
                "base_url": f"{simulators['wix']}/wix",
                "api_key": "wix-key-0123456789",
                "site_id": "bench",
                "concurrency": args.concurrency,
                "rate_per_minute": args.wix_per_minute,
                "drift_policy": "report_only",
            },
            "intempt": {
                "base_url": f"{simulators['intempt']}/intempt",
                "api_key": "pfx.intempt-0123456789",
                "org": "o",
                "project": "p",
                "timestamp_unit": "s",
            },
        },
        reconcile={"chunk": args.chunk},
    )


async def populate(gateway: Gateway, count: int) -> None:
    """``count`` subjects as if decided and delivered: state, acknowledgements, a delivery each per
    provider, and a read-back for the observable ones, written in bulk."""
    await gateway.store.upgrade()
    batch = 5000
    for start in range(0, count, batch):
        ids = [f"s{index:07d}" for index in range(start, min(start + batch, count))]
        rows = _rows(gateway, ids)
        async with gateway.store.engine.begin() as conn:
            for table in (subjects, subject_purposes, decisions, provider_state, observations, deliveries):
                await conn.execute(insert(table), rows[table.name])


def _rows(gateway: Gateway, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in ("subjects", "subject_purposes", "decisions")}
    rows |= {"provider_state": [], "observations": [], "deliveries": []}
    for subject_id in ids:
        decision_id = str(uuid.uuid4())
        email, phone = f"{subject_id}@example.com", f"+1415{int(subject_id[1:]):07d}"
        subject = {
            "id": subject_id,
            "email": email,
            "phone": phone,
            "tcf_string": TCF,
            "vendors": {},
            "expires_at": None,
            "source": "import",
            "note": None,
            "occurred_at": NOW,
            "updated_at": NOW,
        }
        purposes = [
            {"subject_id": subject_id, "purpose": p, "state": s, "occurred_at": NOW, "decision_id": decision_id}
            for p, s in PURPOSES.items()
        ]
        rows["subjects"].append(subject)
        rows["subject_purposes"] += purposes
        body = {"subject": {"id": subject_id}, "purposes": PURPOSES, "occurred_at": NOW.isoformat(), "source": "import"}
        rows["decisions"].append(
            {
                "id": decision_id,
                "subject_id": subject_id,
                "occurred_at": NOW,
                "received_at": NOW,
                "body": body,
                "effective": sorted(PURPOSES),
                "superseded": [],
            }
        )
        state = subject_state(subject, purposes)
        for name, adapter in gateway.adapters.items():
            projection = adapter.project(state)
            rows["provider_state"].append(
                {
                    "subject_id": subject_id,
                    "provider": name,
                    "acknowledged": projection,
                    "memo": {},
                    "acknowledged_at": NOW,
                }
            )
            if name != "intempt":
                rows["observations"].append(
                    {
                        "subject_id": subject_id,
                        "provider": name,
                        "held": projection,
                        "changed_at": {},
                        "observed_at": NOW,
                        "run_id": None,
                        "error": None,
                        "error_at": None,
                    }
                )
            rows["deliveries"].append(
                {
                    "id": str(uuid.uuid4()),
                    "decision_id": decision_id,
                    "subject_id": subject_id,
                    "provider": name,
                    "status": "succeeded",
                    "attempts": 1,
                    "reschedules": 0,
                    "next_attempt_at": NOW,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
    return rows


async def view_only(database_url: str) -> dict[str, Any]:
    """In a fresh process: the whole drift view, timed, with this process's peak RSS."""
    gateway = Gateway(settings(database_url, dict.fromkeys(("masivo", "wix", "intempt"), "http://x"), ARGS))
    began = time.perf_counter()
    page = await gateway.reconciler.view(limit=50)
    elapsed = time.perf_counter() - began
    await gateway.store.close()
    rows = sum(page.counts.values())
    return {
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def view(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    url = args.database or f"sqlite+aiosqlite:///{folder / 'view.db'}"
    gateway = Gateway(settings(url, dict.fromkeys(("masivo", "wix", "intempt"), "http://x"), args))
    began = time.perf_counter()
    await populate(gateway, args.subjects)
    populated = time.perf_counter() - began
    await gateway.store.close()
    measured = subprocess.run(
        [sys.executable, "-m", "benchmarks.reconciliation", "--view-only", url, "--chunk", str(args.chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"subjects": args.subjects, "populate_seconds": round(populated, 1), **json.loads(measured.stdout)}


async def readback(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    ports = {name: 19000 + os.getpid() % 500 * 3 + n for n, name in enumerate(("masivo", "wix", "intempt"))}
    sims = [
        subprocess.Popen(
            [CLI, "simulate", "--port", str(port), "--log-limit", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports.values()
    ]
    simulators = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name, base in simulators.items():
            await answering(f"{base}/{name}/_inspect")
            async with httpx.AsyncClient(base_url=base) as control:
                await control.post(f"/{name}/_faults", json={"latency_ms": args.latency_ms})
        results: dict[str, Any] = {"subjects": args.read_subjects, "latency_ms": args.latency_ms}
        for provider in ("masivo", "wix"):
            url = f"sqlite+aiosqlite:///{folder / f'readback-{provider}.db'}"
            gateway = Gateway(settings(url, simulators, args))
            await populate(gateway, args.read_subjects)
            results[provider] = await _one_run(gateway, provider, args)
            await gateway.stop()
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(10)
    return results


async def _one_run(gateway: Gateway, provider: str, args: argparse.Namespace) -> dict[str, Any]:
    requests = 0

    async def count(_request: Any) -> None:
        nonlocal requests
        requests += 1

    gateway.worker.lanes[provider].client.event_hooks["request"].append(count)
    run = await gateway.reconciler.start([provider], None)
    claimed = await gateway.store.runs.claim(gateway.clock(), 600, run_id=run.id)
    assert claimed is not None
    began = time.perf_counter()
    finished = await gateway.reconciler.execute(claimed, gateway.worker)
    elapsed = time.perf_counter() - began
    if provider == "masivo":
        limit = args.concurrency / (args.latency_ms / 1000)
        what = f"concurrency {args.concurrency} / latency {args.latency_ms:g} ms"
    else:
        limit = args.wix_per_minute / 60
        what = f"request budget {args.wix_per_minute:g}/min"
    return {
        "rows_read": finished.counts[provider]["read"],
        "requests": requests,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 2),
        "limit_requests_per_s": round(limit, 2),
        "limit": what,
        "ratio": round(requests / elapsed / limit, 2),
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging(level=logging.WARNING)
    if args.view_only:
        print(json.dumps(await view_only(args.view_only)))
        return
    with tempfile.TemporaryDirectory() as folder:
        results = {"view": await view(args, Path(folder)), "readback": await readback(args, Path(folder))}
    results["targets"] = {
        "view.seconds": "<= 10 at 100,000 subjects",
        "view.peak_rss_mb": "<= 200",
        "readback.*.ratio": ">= 0.8",
    }
    print(json.dumps(results, indent=2))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=100_000, help="stored subjects for the drift view")
    parser.add_argument("--read-subjects", type=int, default=10_000, help="subjects a read-back run covers")
    parser.add_argument("--database", help="database URL for the view (default: a fresh SQLite file)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4, help="per provider (the default setting)")
    parser.add_argument("--wix-per-minute", type=float, default=200.0, help="Wix's documented budget")
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--view-only", help=argparse.SUPPRESS)
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else argparse.Namespace(concurrency=4, wix_per_minute=200.0, chunk=500)

if __name__ == "__main__":
    asyncio.run(main(ARGS))

"""``reconciliation``: the drift view over many stored subjects, and a read-back run against the
simulators at 20 ms, each measured against its limit.

- ``view``: the drift view's first page of 50 rows with every count (per status, per provider and
  status) over a store holding ``--view-subjects`` subjects (x 3 providers), once a worker's
  refresher stored their rows (``refresh_seconds``: every row computed and stored, as after a
  provider's settings changed), in a fresh process: seconds and peak RSS. Targets <= 1 s and
  <= 200 MB at 100,000 subjects.
- ``readback``: a run over ``--read-subjects`` subjects, one observable provider at a time. Its
  limit is ``concurrency / latency`` requests a second, or its request budget
  (``rate_per_minute / 60``) where that is lower: Masivo reads one customer per request, with no
  budget; Wix pages 100 subjects per query per channel under its 200/min. Target >= 0.8 of each.

The subjects are written in bulk as if decided and delivered. ``python -m benchmarks.reconciliation
--view-only URL`` is the fresh process the view is timed in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from adapters.base import Observable
from adapters.registry import providers
from benchmarks.child import json_from
from benchmarks.common import PROVIDERS, Bench, Database, provider_settings, set_latency
from gateway.config import ReconcileSettings, Settings
from gateway.redaction import configure_logging
from gateway.service import Gateway
from gateway.store.snapshot import subject_state
from gateway.store.tables import decisions, deliveries, observations, provider_state, subject_purposes, subjects

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
PURPOSES = {"email_marketing": "granted", "sms_marketing": "denied", "push_notifications": "granted"}
LATENCY_MS = 20.0
CONCURRENCY = 4  # per provider: the default setting
CHUNK = 500
TARGETS = {
    "view.seconds": "<= 1 at 100,000 subjects",
    "view.peak_rss_mb": "<= 200 at 100,000 subjects",
    "readback.*.ratio": ">= 0.8",
}


def settings(database_url: str, simulators: Mapping[str, str]) -> Settings:
    """Every provider at its simulator, reporting drift rather than repairing it (a run reads; it
    queues no pushes), each at its default request budget (Wix's documented 200/min)."""
    chosen = provider_settings(simulators, concurrency=CONCURRENCY, drift_policy="report_only")
    return Settings(database_url=database_url, providers=chosen, reconcile=ReconcileSettings(chunk=CHUNK))


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
        subject: dict[str, Any] = {
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
            "erased_at": None,
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
            if isinstance(adapter, Observable):
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


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    return {"view": await view(bench, db), "readback": await readback(bench, db), "targets": TARGETS}


async def view_only(database_url: str) -> dict[str, Any]:
    """In a fresh process: the drift view's first page and counts, timed, with this process's peak RSS."""
    gateway = Gateway(settings(database_url, {}))
    began = time.perf_counter()
    page = await gateway.reconciler.view(limit=50)
    elapsed = time.perf_counter() - began
    await gateway.store.close()
    rows = sum(page.counts.values())
    return {
        "rows": rows,
        "seconds": round(elapsed, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def view(bench: Bench, db: Database) -> dict[str, Any]:
    count = bench.args.view_subjects
    url = await db.fresh("view")
    gateway = Gateway(settings(url, {}))
    began = time.perf_counter()
    await populate(gateway, count)
    populated = time.perf_counter() - began
    began = time.perf_counter()
    await gateway.reconciler.refresher.catch_up()  # what a worker's chore does once they are written
    refreshed = time.perf_counter() - began
    await gateway.store.close()
    view = await json_from("the drift view", "benchmarks.reconciliation", "--view-only", url)
    timed = {"populate_seconds": round(populated, 1), "refresh_seconds": round(refreshed, 1)}
    return {"subjects": count, **timed, **view}


async def readback(bench: Bench, db: Database) -> dict[str, Any]:
    count = bench.args.read_subjects
    await set_latency(bench.simulators, dict.fromkeys(PROVIDERS, LATENCY_MS))
    results: dict[str, Any] = {"subjects": count, "latency_ms": LATENCY_MS}
    for provider in [name for name, entry in providers().items() if issubclass(entry.adapter, Observable)]:
        gateway = Gateway(settings(await db.fresh(f"readback-{provider}"), bench.simulators))
        try:
            await populate(gateway, count)
            results[provider] = await _one_run(gateway, provider)
        finally:
            await gateway.stop()
    return results


async def _one_run(gateway: Gateway, provider: str) -> dict[str, Any]:
    requests = 0

    async def count(_request: Any) -> None:
        nonlocal requests
        requests += 1

    for client in gateway.worker.lanes[provider].clients:
        client.event_hooks["request"].append(count)
    run = await gateway.reconciler.start([provider], None)
    claimed = await gateway.store.runs.claim(gateway.clock(), 600, run_id=run.id)
    assert claimed is not None
    began = time.perf_counter()
    finished = await gateway.reconciler.execute(claimed, gateway.worker)
    elapsed = time.perf_counter() - began
    lane = gateway.adapters[provider].settings
    limit = CONCURRENCY / (LATENCY_MS / 1000)
    what = f"concurrency {CONCURRENCY} / latency {LATENCY_MS:g} ms"
    if lane.rate_per_minute and lane.rate_per_minute / 60 < limit:
        limit, what = lane.rate_per_minute / 60, f"request budget {lane.rate_per_minute:g}/min"
    return {
        "rows_read": finished.counts[provider]["read"],
        "requests": requests,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 2),
        "limit_requests_per_s": round(limit, 2),
        "limit": what,
        "ratio": round(requests / elapsed / limit, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="the drift view timed in this process (used by the harness)")
    parser.add_argument("--view-only", required=True, metavar="DATABASE_URL")
    configure_logging(level=logging.WARNING)
    print(json.dumps(asyncio.run(view_only(parser.parse_args().view_only))))


if __name__ == "__main__":
    main()

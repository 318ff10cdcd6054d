"""Delivery throughput with 1 and with 3 `consent-gateway worker` processes on one PostgreSQL.

    python -m benchmarks.workers [--decisions 1500] [--postgres URL] [--latency-ms 20]

Each provider's simulator runs in a process of its own at a set latency (one Python process
answers ~190 requests/s, so one for all three would be the ceiling measured), with no
request budget; the decisions are recorded first (no worker running), then N worker processes start and the clock
runs until every delivery is final. The same decisions, a fresh database and fresh simulators
for each N. Prints one JSON object: per N, deliveries/s and provider requests/s, and the
scale-up ratio of 3 workers over 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.config import Settings, load_settings
from gateway.redaction import configure_logging
from gateway.service import Gateway
from gateway.tables import deliveries, delivery_attempts, metadata
from schemas.consent import Decision

CLI = str(Path(sys.executable).with_name("consent-gateway"))
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
KEYS = {"BENCH_MASIVO": "masivo-key-0123456789", "BENCH_WIX": "wix-key-0123456789"}
KEYS["BENCH_INTEMPT"] = "pfx.intempt-0123456789"


PROVIDERS = ("masivo", "wix", "intempt")


def config_text(database_url: str, simulators: dict[str, str], concurrency: int) -> str:
    return f"""\
database_url = {json.dumps(database_url)}
[worker]
poll_interval_s = 0.05
batch_size = 100
http_port = 0
[providers.masivo]
base_url = "{simulators["masivo"]}/masivo"
api_key = "${{BENCH_MASIVO}}"
concurrency = {concurrency}
[providers.wix]
base_url = "{simulators["wix"]}/wix"
api_key = "${{BENCH_WIX}}"
site_id = "bench"
concurrency = {concurrency}
rate_per_minute = 0.0
[providers.intempt]
base_url = "{simulators["intempt"]}/intempt"
api_key = "${{BENCH_INTEMPT}}"
org = "o"
project = "p"
timestamp_unit = "s"
concurrency = {concurrency}
"""


async def fresh_database(server: str, name: str) -> str:
    """A database of the benchmark's own, emptied and migrated; never the test database."""
    admin = create_async_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        if not await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    url = f"{server}/{name}"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()
    return url


async def record(settings: Settings, count: int) -> None:
    gateway = Gateway(settings)
    await gateway.start(run_worker=False, migrate=True)
    for index in range(count):
        decision = Decision.model_validate(
            {
                "subject": {"id": f"b-{index}", "email": f"b-{index}@example.com", "phone": f"+1415{index:07d}"},
                "purposes": {"email_marketing": "granted", "sms_marketing": "denied", "analytics": "granted"},
                "tcf_string": TCF,
                "occurred_at": "2026-11-23T10:00:00Z",
            },
            strict=False,
        )
        await gateway.record(decision)
    await gateway.stop()


async def open_rows(settings: Settings) -> int:
    engine = create_async_engine(settings.database_url)
    async with engine.connect() as conn:
        query = select(func.count()).select_from(deliveries).where(deliveries.c.status.not_in(("succeeded",)))
        found = int((await conn.execute(query)).scalar_one())
    await engine.dispose()
    return found


async def attempts(settings: Settings) -> int:
    engine = create_async_engine(settings.database_url)
    async with engine.connect() as conn:
        found = int((await conn.execute(select(func.count()).select_from(delivery_attempts))).scalar_one())
    await engine.dispose()
    return found


async def measure(simulators: dict[str, str], workers: int, args: argparse.Namespace) -> dict[str, Any]:
    url = await fresh_database(args.postgres, "consent_gateway_bench_workers")
    for provider, base in simulators.items():
        async with httpx.AsyncClient(base_url=base) as control:
            await control.post(f"/{provider}/_reset")
            await control.post(f"/{provider}/_faults", json={"latency_ms": args.latency_ms})
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.toml"
        config.write_text(config_text(url, simulators, args.concurrency))
        os.environ.update(KEYS)
        settings = load_settings(config)
        await record(settings, args.decisions)
        total = await open_rows(settings)
        env = dict(os.environ)
        began = time.perf_counter()
        procs = [
            subprocess.Popen([CLI, "worker", "--config", str(config)], env=env, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        try:
            while await open_rows(settings):
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
        requests = await attempts(settings)
    return {
        "deliveries": total,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(total / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
    }


async def answering(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


async def main() -> None:
    configure_logging(level=logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=1500)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8, help="per provider and worker")
    args = parser.parse_args()
    ports = {provider: 18000 + os.getpid() % 1000 * 3 + n for n, provider in enumerate(PROVIDERS)}
    sims = [
        subprocess.Popen(
            [CLI, "simulate", "--port", str(port), "--log-limit", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports.values()
    ]
    simulators = {provider: f"http://127.0.0.1:{port}" for provider, port in ports.items()}
    try:
        for provider, base in simulators.items():
            await answering(f"{base}/{provider}/_inspect")
        results: dict[str, Any] = {"decisions": args.decisions, "latency_ms": args.latency_ms}
        for workers in (1, 3):
            results[f"workers_{workers}"] = await measure(simulators, workers, args)
        results["scale_up_3_over_1"] = round(
            results["workers_3"]["deliveries_per_s"] / results["workers_1"]["deliveries_per_s"], 2
        )
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(10)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

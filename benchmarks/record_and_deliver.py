"""Recording and fan-out figures, SQLite and PostgreSQL side by side in one run.

    python benchmarks/record_and_deliver.py [--decisions 500] [--postgres URL]

For each store: POST /v1/consents through the real ASGI app (auth, validation, one
transaction), then the real worker delivering to the three in-process simulators until
nothing is due. Prints one JSON object: per store, the median and p95 request latency in
ms, requests/s, and deliveries/s of the drain; plus the ratios between the stores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.simulators import create_all
from gateway.app import create_app
from gateway.auth import hash_token
from gateway.config import ApiToken, Settings
from gateway.redaction import configure_logging
from gateway.service import Gateway
from gateway.tables import metadata

TOKEN = "benchmark-token-0123456789"
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"


def settings(url: str) -> Settings:
    providers: dict[str, dict[str, Any]] = {
        "masivo": {"base_url": "http://sim/masivo", "api_key": "masivo-key-0123456789"},
        "wix": {
            "base_url": "http://sim/wix",
            "api_key": "wix-key-0123456789",
            "site_id": "s",
            "rate_per_minute": 1_000_000,
        },
        "intempt": {
            "base_url": "http://sim/intempt",
            "api_key": "pfx.intempt-0123456789",
            "org": "o",
            "project": "p",
            "timestamp_unit": "s",
        },
    }
    return Settings(
        database_url=url,
        tokens=[ApiToken(name="bench", sha256=hash_token(TOKEN))],
        providers=providers,
        worker={"enabled": False},
    )


def decision(index: int) -> dict[str, Any]:
    return {
        "subject": {"id": f"cust-{index % 200}", "email": f"p{index % 200}@example.com", "phone": "+14155550100"},
        "purposes": {"email_marketing": "granted" if index % 2 else "denied", "analytics": "granted"},
        "tcf_string": TCF,
        "occurred_at": f"2026-11-23T{10 + index // 3600 % 10:02d}:{index // 60 % 60:02d}:{index % 60:02d}Z",
    }


async def run(url: str, count: int) -> dict[str, float]:
    transport = httpx.ASGITransport(app=create_all())
    gateway = Gateway(settings(url), transports=dict.fromkeys(("masivo", "wix", "intempt"), transport))
    app = create_app(gateway, run_worker=False, migrate=True)
    latencies = []
    async with LifespanManager(app):
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        began = time.perf_counter()
        for index in range(count):
            start = time.perf_counter()
            response = await client.post("/v1/consents", json=decision(index))
            latencies.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 202, response.text
        recorded_s = time.perf_counter() - began
        began = time.perf_counter()
        await gateway.worker.drain()
        drain_s = time.perf_counter() - began
        delivered = sum(int(v) for k, v in _deliveries(gateway).items() if k[1] in {"succeeded", "skipped"})
        await client.aclose()
    latencies.sort()
    return {
        "record_median_ms": round(statistics.median(latencies), 2),
        "record_p95_ms": round(latencies[int(len(latencies) * 0.95)], 2),
        "record_per_s": round(count / recorded_s, 1),
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / drain_s, 1),
    }


def _deliveries(gateway: Gateway) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for metric in gateway.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "consent_gateway_deliveries_total":
                key = (sample.labels["provider"], sample.labels["outcome"])
                counts[key] = sample.value
    return counts


async def fresh_postgres(server: str, name: str) -> str:
    """A database of the benchmark's own, emptied, so it never touches the test database."""
    admin = create_async_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    url = f"{server}/{name}"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()
    return url


async def main() -> None:
    configure_logging(level=logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument(
        "--postgres",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432",
        help="server URL; the benchmark uses its own database there",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"decisions": args.decisions}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = await run(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}", args.decisions)
    results["postgres"] = await run(await fresh_postgres(args.postgres, "consent_gateway_bench"), args.decisions)
    results["postgres_over_sqlite"] = {
        key: round(results["postgres"][key] / results["sqlite"][key], 2)
        for key in ("record_median_ms", "record_per_s", "deliveries_per_s")
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

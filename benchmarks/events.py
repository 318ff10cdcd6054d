"""``events``: an opt-out made at Wix, applied at Masivo and Intempt through Wix's webhook, with no
read-back run. Every provider answers after 50 ms. A Wix simulator of the part's own (`simulate
--events-url`) sends its signed webhooks to `serve` (API and worker in one process); the part records
``--events-subjects`` subjects, lets every delivery and echo settle, then for each subject in turn
revokes its email consent at that simulator and times, from Wix's answer to that revoke, until the
gateway shows the adopted decision delivered at Masivo and Intempt (polled every 20 ms through the
API, so a figure errs against the gateway by up to that much).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from statistics import median
from typing import Any

import httpx

from benchmarks.common import (
    PROVIDERS,
    Bench,
    Database,
    Server,
    answers,
    client,
    record,
    set_latency,
    start_server,
    until_delivered,
    write_config,
)
from benchmarks.load import percentile
from tests.processes import CLI, Processes, clean_env, free_port

LATENCY_MS = 50.0
SOURCE = "wix"  # the provider whose webhooks are measured
TARGETS = {"p99_ms": "<= 2000"}
FOLLOWED = tuple(name for name in PROVIDERS if name != SOURCE)
REVOKE = "/marketing-consent/v1/marketing-consent/remove"


async def run(bench: Bench, db: Database) -> dict[str, Any]:
    url = await db.fresh("events")
    async with bench.processes(f"{db.kind}-events") as procs:
        port = free_port()  # the gateway's, known before the simulator that calls it starts
        events_url = f"http://127.0.0.1:{port}/v1/providers/{SOURCE}/events"
        wix = await start_server(
            procs,
            f"simulate-{SOURCE}-events",
            lambda own: [CLI, "simulate", "--port", str(own), "--events-url", f"{SOURCE}={events_url}"],
            f"/{SOURCE}/_inspect",
        )
        simulators = dict(bench.simulators) | {SOURCE: wix.url}
        await set_latency(simulators, dict.fromkeys(PROVIDERS, LATENCY_MS))
        config = write_config(bench.folder / f"{db.kind}-events.toml", url, simulators)
        gateway = await serve_on(procs, config, port)
        count = bench.args.events_subjects
        await record(gateway.url, count, "ev")
        await until_delivered(url, 600)
        await settled(gateway.url)
        async with client(gateway.url) as api, httpx.AsyncClient(base_url=wix.url, timeout=30) as at_wix:
            times = [await revoke(api, at_wix, f"ev{n}") for n in range(count)]
    return figures(times)


async def serve_on(procs: Processes, config: Any, port: int) -> Server:
    command = [CLI, "serve", "--config", str(config), "--port", str(port), "--worker"]
    process = procs.start("gateway", command, clean_env())
    url = f"http://127.0.0.1:{port}"
    if not await answers(url + "/readyz", process, 60):
        raise RuntimeError(f"the gateway never answered on port {port}\n{process.tail()}")
    return Server(process, url)


async def settled(base: str) -> None:
    """Wait until every webhook so far (the gateway's own writes, echoed back) was acted on."""
    async with client(base) as api:
        for _ in range(3000):
            items = (await api.get(f"/v1/providers/{SOURCE}/events", params={"limit": 200})).json()["items"]
            if items and all(item["status"] != "queued" for item in items):
                return
            await _pause()
    raise RuntimeError("the echoed webhooks were never all acted on")


async def revoke(api: httpx.AsyncClient, at_wix: httpx.AsyncClient, subject: str) -> float:
    """Milliseconds from Wix's answer to a person's revoke until Masivo and Intempt acknowledged it."""
    body = {
        "details": {"type": "EMAIL", "email": f"{subject}@example.com"},
        "lastRevokeActivity": {"source": "REVOKE_LINK", "updatedDate": datetime.now(UTC).isoformat()},
    }
    headers = {"Authorization": "any", "wix-site-id": "demo-site"}
    (await at_wix.post(f"/{SOURCE}{REVOKE}", json=body, headers=headers)).raise_for_status()
    began = time.perf_counter()
    deadline = began + 30
    while time.perf_counter() < deadline:
        newest = (await api.get(f"/v1/subjects/{subject}/history", params={"limit": 1})).json()["items"][0]
        statuses = {delivery["provider"]: delivery["status"] for delivery in newest["deliveries"]}
        if newest["decision"]["source"] == f"provider:{SOURCE}" and all(
            statuses.get(name) == "succeeded" for name in FOLLOWED
        ):
            return (time.perf_counter() - began) * 1000
        await _pause()
    raise RuntimeError(f"{subject}'s revoke at {SOURCE} was not applied within 30 s")


async def _pause() -> None:
    await asyncio.sleep(0.02)


def figures(times: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": round(median(times), 1),
        "p99_ms": round(percentile(times, 0.99), 1),
        "max_ms": round(max(times), 1),
        "slowest": times.index(max(times)),  # which opt-out, in order (0: the first, on cold connections)
        "events": len(times),
        "latency_ms": LATENCY_MS,
        "targets": TARGETS,
    }

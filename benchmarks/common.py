"""What every part shares: starting processes and waiting until they answer, the simulators and
their controls, the config file, a fresh database per part, and reading figures back.

Processes are the test suite's (``tests/processes.py``): spawned on loopback, logged to files,
always killed at the end. Each part starts its own gateway and stops it, so one part's load,
rows or memory never reach the next; the simulators live for the whole run and are reset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.registry import providers
from benchmarks import load as loadgen
from benchmarks.payloads import TOKEN, batch_body
from gateway.http.auth import hash_token
from gateway.store import Store
from gateway.store.tables import deliveries
from schemas.api import UNDER_WAY
from tests.processes import CLI, Process, Processes, clean_env, free_port

PROVIDERS = tuple(providers())  # every installed provider, as the gateway finds them
NOWHERE = "http://127.0.0.1:9"  # a port nothing listens on: the base URL of a provider a part never calls
PROTECTED = frozenset({"postgres", "test", "template0", "template1"})  # never dropped by the harness
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/consent_gateway_bench"


@dataclass
class Server:
    process: Process
    url: str


@dataclass
class Bench:
    """One run: its options, a scratch folder, where logs go, the load generator and the simulators."""

    args: argparse.Namespace
    folder: Path
    logs: Path
    generator: str
    simulators: dict[str, str] = field(default_factory=dict)
    simulator_pids: list[int] = field(default_factory=list)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def load(self, load: loadgen.Load) -> dict[str, Any]:
        return await loadgen.run(load, self.generator)

    @asynccontextmanager
    async def processes(self, label: str) -> AsyncIterator[Processes]:
        """Processes for one part, killed when it ends; what their logs show is kept in ``findings``."""
        logdir = self.logs / label
        logdir.mkdir(parents=True, exist_ok=True)
        procs = Processes(logdir)
        try:
            yield procs
        finally:
            procs.close()
            for process in procs.all:
                found = log_findings(process.log)
                if found["errors"] or found["warnings"]:
                    self.findings[f"{label}/{process.log.name}"] = found


async def start_server(
    procs: Processes, name: str, command: Callable[[int], list[str]], ready: str, timeout: float = 60.0
) -> Server:
    """Start ``command(port)`` on a free loopback port; returns once ``ready`` answers 200
    (another process may take the port first: then it tries again on another)."""
    process = None
    for _ in range(3):
        port = free_port()
        process = procs.start(name, command(port), clean_env())
        url = f"http://127.0.0.1:{port}"
        if await answers(url + ready, process, timeout):
            return Server(process, url)
        process.kill()
    raise RuntimeError(f"{name} never answered {ready}\n{process.tail() if process else ''}")


async def answers(url: str, process: Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while process.alive and time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    return False


# -- simulators -----------------------------------------------------------------------------------


async def start_simulators(procs: Processes, log_limit: int) -> dict[str, Server]:
    """One `consent-gateway simulate` process per provider (one Python process answers ~190
    requests/s: a shared one would be the ceiling measured)."""
    command = [CLI, "simulate", "--log-limit", str(log_limit), "--port"]

    async def one(provider: str) -> Server:
        ready = f"/{provider}/_inspect"
        return await start_server(procs, f"simulate-{provider}", lambda port: [*command, str(port)], ready)

    return dict(zip(PROVIDERS, await asyncio.gather(*(one(provider) for provider in PROVIDERS)), strict=True))


async def set_latency(simulators: Mapping[str, str], latency_ms: Mapping[str, float]) -> None:
    """Every simulator back to as-created (state, log, issued tokens), answering after its latency."""
    async with httpx.AsyncClient(timeout=10) as client:
        for provider, base in simulators.items():
            (await client.post(f"{base}/{provider}/_reset")).raise_for_status()
            faults = {"latency_ms": latency_ms[provider]}
            (await client.post(f"{base}/{provider}/_faults", json=faults)).raise_for_status()


async def logged(simulators: Mapping[str, str], provider: str) -> list[dict[str, Any]]:
    """The requests a simulator logged (``at``/``done``: Unix times of arrival and answer)."""
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{simulators[provider]}/{provider}/_inspect")
    response.raise_for_status()
    return list(response.json()["requests"])


def longest_chain(requests: list[dict[str, Any]]) -> int:
    """How many of these requests ran one after another: the most that do not overlap in time
    (earliest answer first), so requests a flow sends at once count once."""
    chain, free_at = 0, float("-inf")
    for request in sorted(requests, key=lambda entry: entry["done"]):
        if request["at"] >= free_at:
            chain, free_at = chain + 1, request["done"]
    return chain


# -- the gateway ----------------------------------------------------------------------------------


def provider_settings(simulators: Mapping[str, str], **common: Any) -> dict[str, dict[str, Any]]:
    """Every installed provider's demo settings (the registry's, throwaway credentials) at its
    simulator, plus ``common`` (settings every provider has, e.g. ``concurrency``)."""
    return {name: entry.demo(f"{simulators.get(name, NOWHERE)}/{name}") | common for name, entry in providers().items()}


def write_config(path: Path, database_url: str, simulators: Mapping[str, str], concurrency: int = 4) -> Path:
    """A config for `serve` and `worker`: production defaults, except no request budget (else Wix's
    200/min would be the only thing measured) and no HTTP port for `worker` (several run at once)."""
    lines = [f"database_url = {json.dumps(database_url)}", "[[tokens]]", 'name = "bench"']
    lines += [f'sha256 = "{hash_token(TOKEN)}"', "[worker]", "http_port = 0"]
    for name, values in provider_settings(simulators, concurrency=concurrency, rate_per_minute=0.0).items():
        lines += [f"[providers.{name}]", *(f"{key} = {toml_value(value)}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    """A setting's value in TOML: strings, numbers and booleans as JSON writes them (TOML reads
    those alike), lists as arrays, mappings as inline tables."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(key)} = {toml_value(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(value)


async def start_gateway(procs: Processes, config: Path, *, worker: bool) -> Server:
    """`consent-gateway serve` (uvicorn, as in production) once /readyz answers."""
    mode = "--worker" if worker else "--no-worker"
    return await start_server(
        procs, "gateway", lambda port: [CLI, "serve", "--config", str(config), "--port", str(port), mode], "/readyz"
    )


def start_workers(procs: Processes, config: Path, count: int) -> list[Process]:
    return [procs.start("worker", [CLI, "worker", "--config", str(config)], clean_env()) for _ in range(count)]


def client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)


async def record(base: str, count: int, prefix: str) -> None:
    """``count`` decisions for new subjects through the batch endpoint (setup, not measured)."""
    async with client(base) as http:
        for first in range(0, count, 1000):
            body = batch_body(prefix, min(1000, count - first), first)
            answer = await http.post("/v1/consents:batch", content=body, headers={"Content-Type": "application/json"})
            answer.raise_for_status()


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) so far, in MB; None where /proc has none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (``/proc/<pid>/stat``, in clock ticks):
    work per decision, which other load on a shared machine slows down but does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def per(total: float, count: int) -> float | None:
    """``total`` over ``count`` to six places (CPU seconds per decision); None when nothing was counted."""
    return round(total / count, 6) if count else None


def log_findings(log: Path) -> dict[str, Any]:
    """Error and warning lines in a process's log (JSON lines from structlog, or tracebacks)."""
    errors, warnings, first = 0, 0, None
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        level = _level(line)
        errors += level == "error"
        warnings += level == "warning"
        if level == "error" and first is None:
            first = line[:400]
    return {"errors": errors, "warnings": warnings, "first_error": first}


def _level(line: str) -> str | None:
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("level"))
        except ValueError:
            return None
    if line.startswith("Traceback") or " ERROR " in line or line.startswith("ERROR"):
        return "error"
    return "warning" if line.startswith("WARNING") else None


# -- the databases --------------------------------------------------------------------------------


class Database:
    """Where one store's parts run: SQLite files in the run's folder (or next to the file named), or
    a PostgreSQL database of the harness's own, dropped and created again for every part."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url: URL = make_url(url)
        self.kind = "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"
        self.folder = folder
        if self.kind == "postgresql" and self.url.database in PROTECTED | {None}:
            raise SystemExit(
                f"--database: the harness drops and recreates its database; {self.url.database!r} is not one"
            )

    async def fresh(self, part: str) -> str:
        """An empty database at this version's schema (migrated as `db upgrade` would)."""
        url = self._sqlite(part) if self.kind == "sqlite" else await self._postgres()
        store = Store.from_url(url)
        try:
            await store.upgrade()
        finally:
            await store.close()
        return url

    def _sqlite(self, part: str) -> str:
        named = Path(self.url.database) if self.url.database not in (None, "", ":memory:") else None
        path = named.with_name(f"{named.stem}-{part}{named.suffix}") if named else self.folder / f"{part}.db"
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        return self.url.set(database=str(path)).render_as_string(hide_password=False)

    async def _postgres(self) -> str:
        admin = create_async_engine(self.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{self.url.database}" WITH (FORCE)'))
                await conn.execute(text(f'CREATE DATABASE "{self.url.database}"'))
        finally:
            await admin.dispose()
        return self.url.render_as_string(hide_password=False)


async def unreachable(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used, or None when it answers."""
    engine = create_async_engine(make_url(url).set(database="postgres"), connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as error:  # any failure to connect means: skip, saying why
        return f"PostgreSQL not reachable: {type(error).__name__}: {str(error)[:200]}"
    finally:
        await engine.dispose()
    return None


async def scalar(url: str, query: Any) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def until_delivered(url: str, timeout: float) -> float:
    """Poll the store until no delivery is open (pending, sending, retrying); the Unix time that was seen."""
    query = (
        select(func.count())
        .select_from(deliveries)
        .where(deliveries.c.status.in_([status.value for status in UNDER_WAY]))
    )
    deadline = time.monotonic() + timeout
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            while (await conn.execute(query)).scalar_one():
                await conn.commit()  # a fresh snapshot on the next look
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deliveries still open after {timeout:g} s")
                await asyncio.sleep(0.02)
    finally:
        await engine.dispose()
    return time.time()


def ratio(value: float, limit: float) -> float:
    return round(value / limit, 3) if limit else 0.0

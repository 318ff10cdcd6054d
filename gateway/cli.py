"""The ``consent-gateway`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import make_url
from starlette.applications import Starlette

from adapters import ADAPTERS, Adapter
from adapters.simulators import create_all
from adapters.simulators.common import LOG_LIMIT
from gateway import schema
from gateway.app import create_app, create_worker_app
from gateway.config import (
    ConfigError,
    DatabaseSettings,
    Settings,
    build_adapters,
    load_database_settings,
    load_settings,
    refuse_idle,
)
from gateway.demo import DEMO_DATABASE, demo_app, demo_token
from gateway.redaction import configure_logging
from gateway.repair import future_dated, repair
from gateway.schema import SchemaError
from gateway.service import Gateway
from gateway.store import Store
from schemas.api import DeliveryOut, DeliveryStatus

app = typer.Typer(help="One consent decision in, applied in every SaaS tool out.", no_args_is_help=True)
db = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db, name="db")
deliveries = typer.Typer(help="The outbox: list deliveries, replay dead ones.", no_args_is_help=True)
app.add_typer(deliveries, name="deliveries")
subjects = typer.Typer(help="People: find and repair subjects whose state cannot be right.", no_args_is_help=True)
app.add_typer(subjects, name="subjects")
console = Console(stderr=True, soft_wrap=True)  # messages hold ids and paths: never broken up
T = TypeVar("T")


class Format(StrEnum):
    table = "table"
    json = "json"


ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file", exists=True)]
HostOption = Annotated[str, typer.Option(help="address to bind")]
PortOption = Annotated[int, typer.Option(help="port to bind")]
FormatOption = Annotated[Format, typer.Option("--format", help="table or json")]

_TOKEN_FROM_ENV = "API token: the one in $CONSENT_GATEWAY_TOKEN (not printed)"


@app.command()
def serve(
    config: ConfigOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    demo: Annotated[bool, typer.Option(help="SQLite + in-process provider simulators + a demo token")] = False,
    with_worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="run the delivery worker in this process too")
    ] = True,
) -> None:
    """Run the API (and, unless --no-worker, the delivery worker)."""
    if demo:
        host = "127.0.0.1"  # the demo's token may be printed: never expose it beyond loopback
        token, generated = demo_token()
        app = demo_app(host, port, token)
        console.print(f"[bold]demo[/]: simulators at http://{host}:{port}/simulators/{{masivo,wix,intempt}}")
        console.print(f"API token (shown once): [green]{token}[/]" if generated else _TOKEN_FROM_ENV)
    else:
        app = create_app(_gateway(_settings(config), api=True), run_worker=None if with_worker else False)
    _serve(app, host, port)


@app.command()
def worker(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address for /metrics and /healthz [worker.http_host]")] = None,
    port: Annotated[
        int | None, typer.Option(help="port for /metrics and /healthz, 0 for none [worker.http_port]")
    ] = None,
) -> None:
    """Run the delivery worker alone, serving /metrics, /healthz and /readyz on its own port
    (none if it is 0); SIGTERM lets in-flight deliveries finish."""
    settings = _settings(config)
    gateway = _gateway(settings, api=False)
    bind_port = port if port is not None else settings.worker.http_port
    if bind_port:
        _serve(create_worker_app(gateway), host or settings.worker.http_host, bind_port)
        return

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await gateway.start(run_worker=True)
        await stop.wait()
        await gateway.stop()

    asyncio.run(run())


@app.command()
def simulate(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8010,
    log_limit: Annotated[int, typer.Option(min=1, help="requests each simulator keeps for /_inspect")] = LOG_LIMIT,
) -> None:
    """Run the three provider simulators on one port: /masivo, /wix, /intempt."""
    uvicorn.run(create_all(log_limit=log_limit), host=host, port=port)


@db.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Migrate the schema to this version's newest revision (creates it on a new database).
    Needs only database_url: no provider secret."""
    store = Store.from_url(_database_settings(config).database_url)
    before, after = _with(store, store.upgrade)
    console.print(f"schema at revision {after}" + (f" (was {before})" if before != after else " (up to date)"))


@db.command("current")
def db_current(config: ConfigOption = None) -> None:
    """The revision the database is at, and the one this version needs."""
    store = Store.from_url(_database_settings(config).database_url)
    at = _with(store, lambda: schema.current(store.engine))
    wanted = schema.head()
    state = "up to date" if at == wanted else f"behind: {schema.UPGRADE_HINT}"
    print(f"{at or 'no schema'} (this version needs {wanted}; {state})")
    if at != wanted:
        raise typer.Exit(1)


@db.command("history")
def db_history() -> None:
    """Every migration this version ships, newest first."""
    for revision in schema.history():
        print(f"{revision.id}  {revision.message}")


@deliveries.command("list")
def deliveries_list(
    config: ConfigOption = None,
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    status: Annotated[DeliveryStatus | None, typer.Option(help="only this status")] = None,
    subject: Annotated[str | None, typer.Option(help="only this subject id")] = None,
    since: Annotated[datetime | None, typer.Option(help="created at or after (UTC if no offset)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    output: FormatOption = Format.table,
) -> None:
    """Deliveries, newest first."""
    store = _open_store(_database_settings(config))

    async def run() -> list[DeliveryOut]:
        await _known_provider(store, provider)
        page = await store.outbox.list(
            provider=provider, status=status, subject_id=subject, since=_aware(since), limit=limit
        )
        return page.items

    items = _with(store, run)
    if output is Format.json:
        print(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
        return
    table = Table("provider", "subject", "status", "attempts", "updated", "last error")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, so it can be copied to `replay`
    for item in items:
        table.add_row(
            item.provider,
            item.subject_id,
            item.status.value,
            str(item.attempts),
            item.updated_at.isoformat(timespec="seconds"),
            item.last_error or "",
            item.id,
        )
    Console().print(table)


@deliveries.command("replay")
def deliveries_replay(
    delivery_id: Annotated[str | None, typer.Argument(help="one dead delivery")] = None,
    config: ConfigOption = None,
    provider: Annotated[str | None, typer.Option(help="every dead delivery of this provider")] = None,
    since: Annotated[datetime | None, typer.Option(help="...that died at or after this time")] = None,
) -> None:
    """Queue dead deliveries again; each sends the subject's newest state."""
    if (delivery_id is None) == (provider is None):
        _fail("name one delivery id, or --provider (and optionally --since)", 2)
    store = _open_store(_database_settings(config))

    async def run() -> int | str:
        await _known_provider(store, provider)
        if delivery_id is not None:
            found = await store.outbox.get(delivery_id)
            if found is None:
                return f"no delivery {delivery_id}"
            if found.status is not DeliveryStatus.dead:
                return f"delivery {delivery_id} is {found.status.value}: only dead deliveries can be replayed"
        return await store.outbox.replay(
            datetime.now(UTC), delivery_id=delivery_id, provider=provider, since=_aware(since)
        )

    result = _with(store, run)
    if isinstance(result, str):
        _fail(result)
    console.print(f"replayed {result} dead deliver{'y' if result == 1 else 'ies'}")


@subjects.command("future-dated")
def subjects_future_dated(
    config: ConfigOption = None,
    fix: Annotated[bool, typer.Option("--repair", help="re-date and re-fold each one (ledger entry 'repair')")] = False,
    output: FormatOption = Format.table,
) -> None:
    """Subjects whose state holds a decision dated beyond the gateway's clock (recorded before
    such times were refused); such a decision would win every later one for its purposes."""
    settings = _settings(config)
    adapters = _adapters(settings) if fix else {}
    store = _open_store(settings)
    skew = timedelta(seconds=settings.max_clock_skew_s)

    async def run() -> list[dict[str, str]]:
        now = datetime.now(UTC)
        found = await future_dated(store.ledger, now, skew)
        rows = [
            {"subject": f.subject_id, "purpose": f.purpose, "occurred_at": f.occurred_at.isoformat(), "repair": ""}
            for f in found
        ]
        for subject_id in sorted({f.subject_id for f in found}) if fix else ():
            entry = await repair(store.ledger, subject_id, adapters, now, skew)
            for row in rows:
                if row["subject"] == subject_id:
                    row["repair"] = entry.id if entry else "nothing to change"
        return rows

    rows = _with(store, run)
    if output is Format.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("subject", "purpose", "occurred_at", *(["repair entry"] if fix else []))
    for row in rows:
        table.add_row(row["subject"], row["purpose"], row["occurred_at"], *([row["repair"]] if fix else []))
    Console().print(table)
    console.print(f"{len(rows)} future-dated purpose record(s)" + ("" if fix or not rows else "; --repair fixes them"))


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that a SIGTERM it shut down cleanly on exits 0: uvicorn re-raises the
    signal afterwards, and a process manager would count a drained worker as killed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def _serve(app: Starlette, host: str, port: int) -> None:
    _DrainingServer(uvicorn.Config(app, host=host, port=port, log_config=None)).run()


def _with(store: Store, work: Callable[[], Awaitable[T]]) -> T:
    """Run one piece of store work and close the store, whatever happens."""

    async def run() -> T:
        try:
            return await work()
        finally:
            await store.close()

    return asyncio.run(run())


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


async def _known_provider(store: Store, provider: str | None) -> None:
    """A --provider no delivery was ever made to is a typo, not an empty answer."""
    if provider is None:
        return
    known = sorted({*ADAPTERS, *await store.outbox.providers()})
    if provider not in known:
        _fail(f"--provider: unknown provider {provider!r}; known: {', '.join(known)}", 2)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as error:
        _fail(f"config: {error}", 2)


def _database_settings(config: Path | None) -> DatabaseSettings:
    try:
        return load_database_settings(config)
    except ConfigError as error:
        _fail(f"config: {error}", 2)


def _open_store(settings: DatabaseSettings) -> Store:
    """The configured store at the current schema revision; a SQLite file that does not exist
    is refused, not created empty, and a schema that is behind is refused with the fix."""
    url = make_url(settings.database_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists():
        demo = make_url(DEMO_DATABASE).database
        _fail(
            f"no database at {database}: run `consent-gateway db upgrade` to create it, or point --config or "
            f"CONSENT_GATEWAY_DATABASE_URL at yours (the demo's: CONSENT_GATEWAY_DATABASE_URL={DEMO_DATABASE} "
            f"in the directory holding {demo})"
        )
    store = Store.from_url(settings.database_url)
    try:
        _with(store, store.require_current)  # the engine opens its pool again on next use
    except SchemaError as error:
        _fail(str(error))
    return store


def _adapters(settings: Settings) -> dict[str, Adapter]:
    try:
        return build_adapters(settings)
    except ConfigError as error:
        _fail(f"config: {error}", 2)


def _gateway(settings: Settings, *, api: bool) -> Gateway:
    adapters = _adapters(settings)
    try:
        refuse_idle(settings, adapters, api=api)
    except ConfigError as error:
        _fail(f"config: {error}", 2)
    gateway = Gateway(settings, store=_open_store(settings), adapters=adapters)
    configure_logging(gateway.secrets())
    return gateway

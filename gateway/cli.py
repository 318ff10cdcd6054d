"""The ``consent-gateway`` command."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from adapters.simulators import create_all
from gateway.app import create_app
from gateway.config import ConfigError, Settings, load_settings
from gateway.demo import demo_app, demo_token
from gateway.redaction import configure_logging
from gateway.service import Gateway
from gateway.store import Store
from schemas.api import DeliveryOut, DeliveryStatus

app = typer.Typer(help="One consent decision in, applied in every SaaS tool out.", no_args_is_help=True)
db = typer.Typer(help="Database schema.")
app.add_typer(db, name="db")
deliveries = typer.Typer(help="The outbox: list deliveries, replay dead ones.", no_args_is_help=True)
app.add_typer(deliveries, name="deliveries")
console = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file", exists=True)]
HostOption = Annotated[str, typer.Option(help="address to bind")]
PortOption = Annotated[int, typer.Option(help="port to bind")]


_TOKEN_FROM_ENV = "API token: the one in $CONSENT_GATEWAY_TOKEN (not printed)"


@app.command()
def serve(
    config: ConfigOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    demo: Annotated[bool, typer.Option(help="SQLite + in-process provider simulators + a demo token")] = False,
) -> None:
    """Run the API and the delivery worker."""
    if demo:
        host = "127.0.0.1"  # the demo's token may be printed: never expose it beyond loopback
        token, generated = demo_token()
        app = demo_app(host, port, token)
        console.print(f"[bold]demo[/]: simulators at http://{host}:{port}/simulators/{{masivo,wix,intempt}}")
        console.print(f"API token (shown once): [green]{token}[/]" if generated else _TOKEN_FROM_ENV)
    else:
        app = create_app(_gateway(_settings(config)))
    uvicorn.run(app, host=host, port=port, log_config=None)


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run the delivery worker alone (no HTTP); SIGTERM lets in-flight deliveries finish."""
    gateway = _gateway(_settings(config))

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
def simulate(host: HostOption = "127.0.0.1", port: PortOption = 8010) -> None:
    """Run the three provider simulators on one port: /masivo, /wix, /intempt."""
    uvicorn.run(create_all(), host=host, port=port)


@db.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create the schema (idempotent)."""
    store = Store.from_url(_settings(config).database_url)

    async def run() -> None:
        await store.create_schema()
        await store.close()

    asyncio.run(run())
    console.print("schema up to date")


@deliveries.command("list")
def deliveries_list(
    config: ConfigOption = None,
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    status: Annotated[DeliveryStatus | None, typer.Option(help="only this status")] = None,
    subject: Annotated[str | None, typer.Option(help="only this subject id")] = None,
    since: Annotated[datetime | None, typer.Option(help="created at or after (UTC if no offset)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Deliveries, newest first."""
    store = Store.from_url(_settings(config).database_url)

    async def run() -> list[DeliveryOut]:
        try:
            page = await store.outbox.list(
                provider=provider, status=status, subject_id=subject, since=_aware(since), limit=limit
            )
            return page.items
        finally:
            await store.close()

    items = asyncio.run(run())
    if output == "json":
        print(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
        return
    table = Table("id", "provider", "subject", "status", "attempts", "updated", "last error")
    for item in items:
        table.add_row(
            item.id,
            item.provider,
            item.subject_id,
            item.status.value,
            str(item.attempts),
            item.updated_at.isoformat(timespec="seconds"),
            item.last_error or "",
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
    if delivery_id is None and provider is None:
        console.print("[red]name a delivery id, or --provider (and optionally --since)[/]")
        raise typer.Exit(2)
    store = Store.from_url(_settings(config).database_url)

    async def run() -> int:
        try:
            return await store.outbox.replay(
                datetime.now(UTC), delivery_id=delivery_id, provider=provider, since=_aware(since)
            )
        finally:
            await store.close()

    console.print(f"replayed {asyncio.run(run())} dead deliveries")


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as error:
        console.print(f"[red]config error:[/] {error}")
        raise typer.Exit(2) from None


def _gateway(settings: Settings) -> Gateway:
    try:
        gateway = Gateway(settings)
    except ConfigError as error:
        console.print(f"[red]config error:[/] {error}")
        raise typer.Exit(2) from None
    configure_logging(gateway.secrets())
    return gateway

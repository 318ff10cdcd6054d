"""What every ``consent-gateway`` command shares: the app, options, errors and opening the store."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from adapters import Adapter
from adapters.registry import Provider, RegistryError, providers
from gateway.config import (
    ConfigError,
    DatabaseSettings,
    Settings,
    build_adapters,
    load_database_settings,
    load_settings,
    refuse_idle,
)
from gateway.demo import DEMO_DATABASE, demo_settings
from gateway.redaction import configure_logging
from gateway.refusals import Refusal, busy_or_raise
from gateway.service import Gateway
from gateway.store import Store
from gateway.store.ledger import SubjectErased
from gateway.store.migrate import SchemaError

app = typer.Typer(help="One consent decision in, applied in every SaaS tool out.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # messages hold ids and paths: never broken up
T = TypeVar("T")


class Format(StrEnum):
    table = "table"
    json = "json"


ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file", exists=True)]
DemoOption = Annotated[
    bool, typer.Option("--demo", help="the demo's database in this directory, with its providers (serve --demo)")
]
DEMO_SERVER = "http://127.0.0.1:8000"  # where `serve --demo` mounts the simulators a read-back run reaches
HostOption = Annotated[str, typer.Option(help="address to bind")]
PortOption = Annotated[int, typer.Option(help="port to bind")]
FormatOption = Annotated[Format, typer.Option("--format", help="table or json")]


def run_with(store: Store, work: Callable[[], Awaitable[T]]) -> T:
    """Run one piece of store work and close the store, whatever happens; a refusal the work
    raises on purpose (an erased subject) is one line, not a traceback."""

    async def run() -> T:
        try:
            return await work()
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except SubjectErased as refused:
        fail(str(refused))
    except Refusal as refused:  # the gateway's own rules, as the API answers them
        refuse(refused)
    except (SQLAlchemyError, OSError) as error:
        refuse(busy_or_raise(error))


def refuse(refused: Refusal) -> NoReturn:
    problem = refused.problem
    said = problem.title if problem.detail is None else f"{problem.title}: {problem.detail}"
    fail(said, 2 if problem.status == 422 else 1)


def table(*headers: str, **options: Any) -> Table:
    """A table whose cells wrap rather than end in '…' when the terminal is narrow."""
    return Table(*(Column(header, overflow="fold") for header in headers), **options)


def aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def settings(config: Path | None, demo: bool = False) -> Settings:
    """The configured settings; with ``demo``, the demo's (its database in this directory, its
    providers as ``serve --demo`` configures them), so the CLI sees what the demo's API sees."""
    if demo:
        if config is not None:
            fail("--demo and --config: choose one", 2)
        return demo_settings(DEMO_SERVER, secrets.token_urlsafe(24))
    try:
        return load_settings(config)
    except ConfigError as error:
        fail(f"config: {error}", 2)


def database_settings(config: Path | None, demo: bool = False) -> DatabaseSettings:
    if demo:
        return settings(config, demo)
    try:
        return load_database_settings(config)
    except ConfigError as error:
        fail(f"config: {error}", 2)


def open_store(configured: DatabaseSettings) -> Store:
    """The configured store at the current schema revision; a SQLite file that does not exist
    is refused, not created empty, and a schema that is behind is refused with the fix."""
    url = make_url(configured.database_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists():
        demo = make_url(DEMO_DATABASE).database
        if configured.database_url == DEMO_DATABASE:
            fail(f"no {demo} here: run this in the directory where `consent-gateway serve --demo` runs (or ran)")
        fail(
            f"no database at {database}: run `consent-gateway db upgrade` to create it, or point --config or "
            f"CONSENT_GATEWAY_DATABASE_URL at yours (the demo's: CONSENT_GATEWAY_DATABASE_URL={DEMO_DATABASE} "
            f"in the directory holding {demo})"
        )
    store = Store.from_url(configured.database_url)
    try:
        run_with(store, store.require_current)  # the engine opens its pool again on next use
    except SchemaError as error:
        fail(str(error))
    return store


def registered() -> Mapping[str, Provider]:
    """The installed providers; none is a broken install, said in one line with its fix."""
    try:
        return providers()
    except RegistryError as error:
        fail(str(error), 2)


def adapters(configured: Settings) -> dict[str, Adapter]:
    try:
        return build_adapters(configured)
    except ConfigError as error:
        fail(f"config: {error}", 2)


def store_gateway(configured: DatabaseSettings) -> Gateway:
    """The gateway for actions on the store alone (retry, replay): no provider, so no secret needed."""
    return Gateway(Settings(database_url=configured.database_url), store=open_store(configured), adapters={})


def gateway(configured: Settings, *, api: bool | None) -> Gateway:
    """The gateway on the configured store; ``api``: refuse a server with nothing to do (None: a tool)."""
    built = adapters(configured)
    if api is not None:
        try:
            refuse_idle(configured, built, api=api)
        except ConfigError as error:
            fail(f"config: {error}", 2)
    if not built:  # the store's rows for providers are then neither shown nor acted on
        console.print(
            "[yellow]warning:[/] no provider is configured here, so no provider's rows are shown or acted on: "
            "pass --config with the server's config (or --demo for the demo's database)"
        )
    found = Gateway(configured, store=open_store(configured), adapters=built)
    configure_logging(found.secrets(), configured.log_level, console=configured.log_format == "console")
    return found

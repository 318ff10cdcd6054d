"""``db``: the store's schema (alembic migrations); needs only ``database_url``."""

from __future__ import annotations

import typer

from gateway.cli.common import ConfigOption, console, database_settings, run_with
from gateway.store import Store
from gateway.store import migrate as schema

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(config: ConfigOption = None) -> None:
    """Migrate the schema to this version's newest revision (creates it on a new database).
    Needs only database_url: no provider secret."""
    store = Store.from_url(database_settings(config).database_url)
    before, after = run_with(store, store.upgrade)
    was = "up to date" if before == after else f"was {before}" if before else "a new database"
    console.print(f"schema at revision {after} ({was})")


@app.command("current")
def current(config: ConfigOption = None) -> None:
    """The revision the database is at, and the one this version needs."""
    store = Store.from_url(database_settings(config).database_url)
    at = run_with(store, store.current)
    wanted = schema.head()
    state = "up to date" if at == wanted else f"behind: {schema.UPGRADE_HINT}"
    print(f"{at or 'no schema'} (this version needs {wanted}; {state})")
    if at != wanted:
        raise typer.Exit(1)


@app.command("history")
def history() -> None:
    """Every migration this version ships, newest first."""
    for revision in schema.history():
        print(f"{revision.id}  {revision.message}")

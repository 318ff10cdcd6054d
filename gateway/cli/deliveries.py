"""``deliveries``: the outbox — list, replay dead ones, retry waiting ones now."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from adapters.registry import providers
from gateway.cli.common import (
    ConfigOption,
    DemoOption,
    Format,
    FormatOption,
    aware,
    console,
    database_settings,
    fail,
    open_store,
    run_with,
    store_gateway,
    table,
)
from gateway.store import Store
from schemas.api import DeliveryOut, DeliveryStatus

app = typer.Typer(help="The outbox: list deliveries, replay dead ones, retry waiting ones now.", no_args_is_help=True)


@app.command("list")
def list_deliveries(
    config: ConfigOption = None,
    demo: DemoOption = False,
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    status: Annotated[DeliveryStatus | None, typer.Option(help="only this status")] = None,
    subject: Annotated[str | None, typer.Option(help="only this subject id")] = None,
    since: Annotated[datetime | None, typer.Option(help="created at or after (UTC if no offset)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    output: FormatOption = Format.table,
) -> None:
    """Deliveries, newest first."""
    store = open_store(database_settings(config, demo))

    async def run() -> list[DeliveryOut]:
        await known_provider(store, provider)
        page = await store.outbox.list(
            provider=provider, status=status, subject_id=subject, since=aware(since), limit=limit
        )
        return page.items

    items = run_with(store, run)
    if output is Format.json:
        print(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
        return
    shown = table("provider", "subject", "status", "attempts", "updated", "last error")
    shown.add_column("id", no_wrap=True, min_width=36)  # whole, so it can be copied to `replay`
    for item in items:
        shown.add_row(
            item.provider,
            item.subject_id,
            item.status.value,
            str(item.attempts),
            item.updated_at.isoformat(timespec="seconds"),
            item.last_error or "",
            item.id,
        )
    Console().print(shown)


@app.command("replay")
def replay(
    delivery_id: Annotated[str | None, typer.Argument(help="one dead delivery")] = None,
    config: ConfigOption = None,
    demo: DemoOption = False,
    provider: Annotated[str | None, typer.Option(help="every dead delivery of this provider")] = None,
    since: Annotated[datetime | None, typer.Option(help="...that died at or after this time")] = None,
) -> None:
    """Queue dead deliveries again; each sends the subject's newest state."""
    if (delivery_id is None) == (provider is None):
        fail("name one delivery id, or --provider (and optionally --since)", 2)
    built = store_gateway(database_settings(config, demo))

    async def run() -> int:
        if delivery_id is not None:
            await built.replay(delivery_id)
            return 1
        await known_provider(built.store, provider)
        return await built.store.outbox.replay(built.clock(), provider=provider, since=aware(since))

    result = run_with(built.store, run)
    console.print(f"replayed {result} dead deliver{'y' if result == 1 else 'ies'}")


@app.command("retry")
def retry(
    delivery_id: Annotated[str, typer.Argument(help="a pending or retrying delivery")],
    config: ConfigOption = None,
    demo: DemoOption = False,
) -> None:
    """Make a waiting delivery due now instead of at its retry-ladder step."""
    built = store_gateway(database_settings(config, demo))
    run_with(built.store, lambda: built.retry(delivery_id))
    console.print(f"delivery {delivery_id} is due now; a running worker takes it up")


async def known_provider(store: Store, provider: str | None) -> None:
    """A --provider no delivery was ever made to is a typo, not an empty answer."""
    if provider is None:
        return
    known = sorted({*providers(), *await store.outbox.providers()})
    if provider not in known:
        fail(f"--provider: unknown provider {provider!r}; known: {', '.join(known)}", 2)

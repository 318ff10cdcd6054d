"""``subjects``: repairs of one person's state — push again, adopt a provider's, fix future dates."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console

from gateway.cli.common import (
    ConfigOption,
    DemoOption,
    Format,
    FormatOption,
    adapters,
    console,
    fail,
    gateway,
    open_store,
    run_with,
    settings,
    table,
)

app = typer.Typer(help="People: repair one subject's state at the providers or here.", no_args_is_help=True)
ProviderOption = Annotated[list[str] | None, typer.Option("--provider", help="this provider (repeatable); default all")]


@app.command("repush")
def repush(
    subject_id: Annotated[str, typer.Argument(help="the subject to push again")],
    config: ConfigOption = None,
    demo: DemoOption = False,
    provider: ProviderOption = None,
    note: Annotated[str | None, typer.Option(help="why, for the ledger")] = None,
) -> None:
    """Push the subject to providers again, whatever they acknowledged (also unobservable ones)."""
    built = gateway(settings(config, demo), api=None)
    why = note or f"re-pushed from the command line to {', '.join(sorted(provider or built.adapters))}"
    entry = run_with(built.store, lambda: built.repush(subject_id, provider, why))
    console.print(f"repair entry {entry.id}: a running worker pushes {', '.join(d.provider for d in entry.deliveries)}")


@app.command("adopt")
def adopt(
    subject_id: Annotated[str, typer.Argument(help="the subject")],
    provider: Annotated[str, typer.Option(help="the provider whose read-back state to adopt")],
    config: ConfigOption = None,
    demo: DemoOption = False,
) -> None:
    """Adopt what a provider was last read to hold as the person's decision, now."""
    built = gateway(settings(config, demo), api=None)
    entry = run_with(built.store, lambda: built.adopt(subject_id, provider))
    console.print(f"decision {entry.id} ({entry.decision.source}): {json.dumps(entry.decision.purposes)}")


@app.command("erase")
def erase(
    subject_id: Annotated[str, typer.Argument(help="the subject to erase")],
    config: ConfigOption = None,
    demo: DemoOption = False,
) -> None:
    """Erase a person: removal at every provider (by a running worker), then their data out of the
    store; later decisions for the id are refused unless they re-create it. Audited as 'cli:<user>'."""
    built = gateway(settings(config, demo), api=None)
    if not built.adapters:  # the removals would be queued nowhere, and the scrub would follow at once
        fail("no provider is configured: an erasure needs every provider that may hold the person (--config)", 2)
    erasure, started = run_with(built.store, lambda: built.erase(subject_id, f"cli:{getpass.getuser()}"))
    removals = ", ".join(f"{d.provider} {d.status}" for d in erasure.deliveries)
    console.print(
        f"erasure {erasure.id} ({'started' if started else 'requested before'}): {erasure.status}; {removals}"
    )


@app.command("future-dated")
def subjects_future_dated(
    config: ConfigOption = None,
    demo: DemoOption = False,
    fix: Annotated[bool, typer.Option("--repair", help="re-date and re-fold each one (ledger entry 'repair')")] = False,
    output: FormatOption = Format.table,
) -> None:
    """Subjects whose state holds a decision dated beyond the gateway's clock (recorded before
    such times were refused); such a decision would win every later one for its purposes."""
    configured = settings(config, demo)
    built = adapters(configured) if fix else {}
    store = open_store(configured)
    skew = timedelta(seconds=configured.max_clock_skew_s)

    async def run() -> list[dict[str, str]]:
        now = datetime.now(UTC)
        found = await store.future_dates.find(now, skew)
        rows = [
            {"subject": f.subject_id, "purpose": f.purpose, "occurred_at": f.occurred_at.isoformat(), "repair": ""}
            for f in found
        ]
        for subject_id in sorted({f.subject_id for f in found}) if fix else ():
            entry = await store.future_dates.repair(subject_id, built, now, skew)
            for row in rows:
                if row["subject"] == subject_id:
                    row["repair"] = entry.id if entry else "nothing to change"
        return rows

    rows = run_with(store, run)
    if output is Format.json:
        print(json.dumps(rows, indent=2))
        return
    shown = table("subject", "purpose", "occurred_at", *(["repair entry"] if fix else []))
    for row in rows:
        shown.add_row(row["subject"], row["purpose"], row["occurred_at"], *([row["repair"]] if fix else []))
    Console().print(shown)
    console.print(f"{len(rows)} future-dated purpose record(s)" + ("" if fix or not rows else "; --repair fixes them"))

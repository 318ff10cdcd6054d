"""``reconcile``: the drift view in a terminal, a read-back run with a progress bar, repairs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gateway.cli.common import (
    ConfigOption,
    DemoOption,
    Format,
    FormatOption,
    app,
    console,
    fail,
    gateway,
    run_with,
    settings,
    table,
)
from gateway.reconcile.rows import Disagreement
from gateway.service import Gateway
from gateway.store.ledger import SubjectErased
from schemas.api import ProviderSync, ReconciliationPage, RunOut, SyncStatus

NEEDS_REPAIR = (SyncStatus.diverged, SyncStatus.failed)


@app.command()
def reconcile(
    config: ConfigOption = None,
    demo: DemoOption = False,
    provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
    status: Annotated[SyncStatus | None, typer.Option(help="only rows with this status")] = None,
    subject: Annotated[str | None, typer.Option(help="only this subject id")] = None,
    read: Annotated[bool, typer.Option("--run", help="read the providers back first (a run, here)")] = False,
    fix: Annotated[bool, typer.Option("--repair", help="push every diverged or failed row shown again")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="rows shown")] = 200,
    output: FormatOption = Format.table,
    check: Annotated[
        bool, typer.Option("--check", help="compute every row from scratch; exit 1 if a stored row disagrees")
    ] = False,
) -> None:
    """Where the providers disagree with the gateway: per subject and provider, desired vs
    acknowledged vs observed, and the counts per status."""
    built = gateway(settings(config, demo), api=None)
    if check:
        _check(built, output)
        return
    if provider is not None and provider not in built.adapters:
        fail(f"--provider: not configured: {provider}; configured: {', '.join(built.adapters) or 'none'}", 2)

    async def work() -> tuple[RunOut | None, ReconciliationPage, int]:
        try:
            run = await _read_back(built, provider, subject) if read else None
            statuses = None if status is None else {status}
            page = await built.reconciler.view(provider=provider, status=statuses, subject=subject, limit=limit)
            repaired = 0
            for row in [row for row in page.items if row.status in NEEDS_REPAIR] if fix else ():
                note = f"reconcile --repair: the row was {row.status.value}"
                with suppress(SubjectErased):  # an erased subject gets nothing pushed but its removal
                    repaired += await built.reconciler.repush(row.subject_id, [row.provider], note) is not None
            return run, page, repaired
        finally:
            await built.worker.stop()  # closes the providers' clients; this process delivers nothing

    run, page, repaired = run_with(built.store, work)
    if output is Format.json:
        shown = page.model_dump(mode="json") | {"repaired": repaired, "run": run and run.model_dump(mode="json")}
        print(json.dumps(shown, indent=2))
        return
    _print(page)
    if fix:
        console.print(f"re-pushed {repaired} row(s); a running worker delivers them")


def _check(built: Gateway, output: Format) -> None:
    """The stored rows (after the marked subjects' are stored) against every row computed from scratch."""

    async def work() -> list[Disagreement]:
        try:
            return await built.reconciler.refresher.check()
        finally:
            await built.worker.stop()

    found = run_with(built.store, work)
    if output is Format.json:
        print(json.dumps({"disagreeing": [asdict(d) for d in found]}, indent=2, default=str))
    else:
        rows = table("subject", "provider", "stored", "computed")
        for d in found:
            rows.add_row(d.subject_id, d.provider, _shown(d.stored), _shown(d.computed))
        Console().print(rows)
        console.print(f"{len(found)} stored row(s) disagree with the rows computed from scratch")
    if found:
        raise typer.Exit(1)


def _shown(row: Mapping[str, Any] | None) -> str:
    return "(none)" if row is None else str(row["status"])


async def _read_back(built: Gateway, provider: str | None, subject: str | None) -> RunOut:
    reconciler = built.reconciler
    readable = [provider] if provider else reconciler.observable()
    if not set(readable) <= set(reconciler.observable()):
        fail(f"{provider} cannot be read back (no read API): its rows are unobservable")
    queued = await reconciler.start(readable, [subject] if subject else None)
    run = await built.store.runs.claim(built.clock(), built.settings.reconcile.lease_s, run_id=queued.id)
    assert run is not None, "a run just queued is claimable"
    total = 1 if subject else await reconciler.snapshots.count()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"reading back {', '.join(readable)}", total=total)
        return await reconciler.execute(
            run, built.worker, lambda step: bar.update(task, completed=step.counts.get("subjects", 0))
        )


def _print(page: ReconciliationPage) -> None:
    counts = Table(*[status.value for status in SyncStatus], title="rows per status")
    counts.add_row(*[str(page.counts.get(status, 0)) for status in SyncStatus])
    rows = table("subject", "provider", "status", "difference (desired → held)", "observed", "last delivery")
    for row in page.items:
        rows.add_row(
            row.subject_id,
            row.provider,
            row.status.value,
            _difference(row),
            row.observe_error or (row.observed_at.isoformat(timespec="seconds") if row.observed_at else ""),
            f"{row.last_delivery.status.value} {row.last_delivery.last_error or ''}" if row.last_delivery else "",
        )
    Console().print(counts)
    Console().print(rows)


def _difference(row: ProviderSync) -> str:
    shown = [f"{d.term}: {json.dumps(d.desired)} → {json.dumps(d.held)}" for d in row.difference]
    shown += [f"{term}: not applicable ({why})" for term, why in row.not_applicable.items()]
    return "\n".join(shown)

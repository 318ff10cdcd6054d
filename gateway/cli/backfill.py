"""``backfill``: every live subject's state pushed to one provider again, here, with a progress bar
and a receipt; resumable (run it again to go on where it stopped)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

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
from gateway.service import Gateway
from schemas.api import BackfillOut, BackfillPreview, RunStatus


@app.command()
def backfill(
    provider: Annotated[str, typer.Option("--provider", help="the provider to send everything to again")],
    config: ConfigOption = None,
    demo: DemoOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be pushed; change nothing")] = False,
    output: FormatOption = Format.table,
) -> None:
    """Push every live subject's state to a provider that was just enabled or lost its data, as if it
    held nothing; this process delivers the pushes within the provider's budget. A backfill of the
    provider already under way is joined, and one that stopped resumes where it stopped."""
    built = gateway(settings(config, demo), api=None)
    if provider not in built.adapters:
        fail(f"--provider: not configured: {provider}; configured: {', '.join(built.adapters) or 'none'}", 2)

    async def work() -> BackfillOut | BackfillPreview:
        try:
            if dry_run:
                return await built.preview_backfill(provider)
            return await _drive(built, provider)
        finally:
            await built.worker.stop()  # lets the pushes in flight finish; the rest stay queued

    result = run_with(built.store, work)
    if output is Format.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    elif isinstance(result, BackfillPreview):
        _print_preview(result)
    else:
        _print_receipt(result)
    if isinstance(result, BackfillOut) and (result.status is RunStatus.failed or result.outcomes.get("dead")):
        raise typer.Exit(1)  # a script notices that some subjects did not get there


async def _drive(built: Gateway, provider: str) -> BackfillOut:
    queued, created = await built.start_backfill(provider)
    if not created:
        console.print(f"joining backfill {queued.id} of {provider} (enqueued {queued.enqueued} so far)")
    built.worker.start()
    with Progress(console=console, transient=True) as bar:
        enqueued = bar.add_task(f"enqueued for {provider}", total=queued.subjects)
        finished = bar.add_task("finished", total=queued.subjects)

        def show(step: BackfillOut) -> None:
            total = max(step.subjects, step.enqueued + step.outcomes.get("nothing", 0))
            bar.update(enqueued, completed=step.enqueued + step.outcomes.get("nothing", 0), total=total)
            bar.update(finished, completed=step.finished, total=total)

        return await built.backfiller.drive(queued.id, show)


def _print_preview(preview: BackfillPreview) -> None:
    shown = table("subjects", "something mapped (pushed)", "nothing to push", title=f"dry run: {preview.provider}")
    shown.add_row(str(preview.subjects), str(preview.mapped), str(preview.nothing))
    Console().print(shown)


def _print_receipt(done: BackfillOut) -> None:
    outcomes = table("outcome", "subjects", title=f"backfill of {done.provider}: {done.status.value}")
    for outcome, count in sorted(done.outcomes.items()):
        outcomes.add_row(outcome, str(count))
    Console().print(outcomes)
    Console().print(f"backfill id: {done.id}")
    if done.failures:
        dead = done.outcomes.get("dead", 0)
        failed = table("subject", "status", "reason", title=f"failed: the first {len(done.failures)} of {dead}")
        for failure in done.failures:
            failed.add_row(failure.subject_id, str(failure.status_code or ""), failure.error or "")
        Console().print(failed)

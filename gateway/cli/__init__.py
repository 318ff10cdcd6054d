"""The ``consent-gateway`` command: one typer app, one module per group of commands."""

from __future__ import annotations

from gateway.cli import backfill, db, deliveries, reconcile, serve, subjects, tokens
from gateway.cli.common import app

app.add_typer(db.app, name="db")
app.add_typer(deliveries.app, name="deliveries")
app.add_typer(subjects.app, name="subjects")
app.add_typer(tokens.app, name="token")

__all__ = ["app", "backfill", "reconcile", "serve"]

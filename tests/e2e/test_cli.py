"""The `consent-gateway` command: deliveries list/replay and db upgrade against a real store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.outbox import Outcome
from gateway.store import Store
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.fakes import fake_adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def prepare(url: str) -> str:
    """A store holding one dead delivery; returns its id."""

    async def run() -> str:
        store = Store.from_url(url)
        await store.create_schema()
        decision = Decision.model_validate(
            {"subject": {"id": "cust-1"}, "purposes": {"email_marketing": "granted"}, "occurred_at": NOW}, strict=False
        )
        await store.ledger.record(decision, {"fake": fake_adapter()}, NOW)
        [claim] = await store.outbox.claim("fake", 1, NOW, 60, ladder_steps=7)
        await store.outbox.finish(claim, Outcome(DeliveryStatus.dead, error="fake (HTTP 400): no"), NOW)
        await store.close()
        return claim.id

    return asyncio.run(run())


def test_list_then_replay_dead_deliveries(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "{url}"\n')
    dead_id = prepare(url)
    runner = CliRunner()

    listed = runner.invoke(app, ["deliveries", "list", "--config", str(config), "--status", "dead", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [item["id"] for item in json.loads(listed.stdout)] == [dead_id]

    table = runner.invoke(app, ["deliveries", "list", "--config", str(config)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "fake (HTTP 400): no" in table.stdout

    refused = runner.invoke(app, ["deliveries", "replay", "--config", str(config)])
    assert refused.exit_code == 2

    replayed = runner.invoke(app, ["deliveries", "replay", "--config", str(config), "--provider", "fake"])
    assert replayed.exit_code == 0 and "replayed 1" in replayed.output
    pending = runner.invoke(
        app, ["deliveries", "list", "--config", str(config), "--status", "pending", "--format", "json"]
    )
    assert [item["id"] for item in json.loads(pending.stdout)] == [dead_id]


def test_db_upgrade_creates_the_schema_and_a_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{tmp_path / "new.db"}"\n')
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    assert (tmp_path / "new.db").exists()

    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.wix]\napi_key = "${SURELY_UNSET_WIX_KEY}"\nsite_id = "s"\n')
    result = runner.invoke(app, ["worker", "--config", str(bad)])
    assert result.exit_code == 2 and "SURELY_UNSET_WIX_KEY" in result.output


def test_serve_demo_prints_a_generated_token_but_never_the_callers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[dict[str, Any]] = []
    monkeypatch.setattr("gateway.cli.uvicorn.run", lambda app, **options: served.append(options))
    monkeypatch.chdir(tmp_path)  # the demo's SQLite file goes to the working directory
    runner = CliRunner()

    monkeypatch.setenv("CONSENT_GATEWAY_TOKEN", "callers-own-token-0123456789")
    chosen = runner.invoke(app, ["serve", "--demo", "--host", "0.0.0.0"])
    assert chosen.exit_code == 0, chosen.output
    assert "callers-own-token-0123456789" not in chosen.output and "CONSENT_GATEWAY_TOKEN" in chosen.output

    monkeypatch.delenv("CONSENT_GATEWAY_TOKEN")
    generated = runner.invoke(app, ["serve", "--demo"])
    assert generated.exit_code == 0, generated.output
    assert "API token (shown once):" in generated.output
    assert [options["host"] for options in served] == ["127.0.0.1", "127.0.0.1"], "the demo stays on loopback"

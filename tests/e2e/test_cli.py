"""The `consent-gateway` command: deliveries list/replay and db upgrade against a real store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli import serve as serve_commands
from gateway.config import build_adapters, load_settings
from gateway.store import Store
from gateway.store.outbox import Outcome
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.fakes import fake_adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def prepare(url: str) -> str:
    """A store holding one dead delivery; returns its id."""

    async def run() -> str:
        store = Store.from_url(url)
        await store.upgrade()
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
    monkeypatch.setattr("gateway.cli.serve.serve_app", lambda app, host, port, *_timeout: served.append({"host": host}))
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


def succeed(url: str, delivery_id: str) -> None:
    async def run() -> None:
        store = Store.from_url(url)
        await store.outbox.replay(NOW, delivery_id=delivery_id)
        [claim] = await store.outbox.claim("fake", 1, NOW, 60, ladder_steps=7)
        await store.outbox.finish(claim, Outcome(DeliveryStatus.succeeded), NOW)
        await store.close()

    asyncio.run(run())


def test_the_cli_refuses_what_it_cannot_do_with_a_non_zero_exit(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "{url}"\n')
    dead_id = prepare(url)
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, [*args, "--config", str(config)], env={"COLUMNS": "80"})

    missing = cli("deliveries", "replay", "does-not-exist")
    assert missing.exit_code == 1 and "No such delivery" in missing.output, "the API's answer: a 404"
    assert cli("deliveries", "list", "--format", "yaml").exit_code == 2
    assert cli("deliveries", "list", "--provider", "bogus").exit_code == 2
    assert cli("deliveries", "replay", "--provider", "bogus").exit_code == 2
    assert cli("deliveries", "replay", dead_id, "--provider", "fake").exit_code == 2, "one or the other"
    assert dead_id in cli("deliveries", "list").stdout, "a narrow terminal still shows whole ids"

    succeed(url, dead_id)
    not_dead = cli("deliveries", "replay", dead_id)
    assert not_dead.exit_code == 1, not_dead.output
    assert "Only dead deliveries can be replayed: this one is succeeded" in " ".join(not_dead.output.split())


def test_without_a_database_the_cli_says_where_it_looked_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["deliveries", "list"])
    assert result.exit_code == 1
    assert "no database at consent-gateway.db" in result.output and "consent-gateway-demo.db" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "complaints"),
    [(["serve"], ["no API token", "no provider"]), (["worker"], ["no provider"])],
)
def test_a_server_with_nothing_configured_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], complaints: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("gateway.cli.serve.serve_app", lambda *_a: pytest.fail("must not start"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert [c for c in ("no API token", "no provider") if c in result.output] == complaints


def test_a_future_dated_subject_is_listed_then_repaired_with_a_ledger_entry(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "config.toml"
    config.write_text(
        f'database_url = "{url}"\n'
        '[providers.intempt]\napi_key = "pfx.not-used-here"\norg = "o"\nproject = "p"\n'
        'base_url = "http://127.0.0.1:9"\n'
    )
    poisoned = {"subject": {"id": "cust-1"}, "purposes": {"email_marketing": "granted"}}

    async def record() -> None:  # as the gateway did before occurred_at was bounded
        store = Store.from_url(url)
        await store.upgrade()
        adapters = build_adapters(load_settings(config))
        future = Decision.model_validate({**poisoned, "occurred_at": "9999-12-31T23:59:59Z"}, strict=False)
        await store.ledger.record(future, adapters, NOW)
        opt_out = {**poisoned, "purposes": {"email_marketing": "denied"}, "occurred_at": NOW + timedelta(minutes=1)}
        later = await store.ledger.record(Decision.model_validate(opt_out, strict=False), adapters, NOW)
        assert later.superseded_purposes == ["email_marketing"], "the poison at work"
        await store.close()

    asyncio.run(record())
    runner = CliRunner()
    listed = runner.invoke(app, ["subjects", "future-dated", "--config", str(config), "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [(row["subject"], row["purpose"]) for row in json.loads(listed.stdout)] == [("cust-1", "email_marketing")]

    fixed = runner.invoke(app, ["subjects", "future-dated", "--repair", "--config", str(config), "--format", "json"])
    assert fixed.exit_code == 0, fixed.output

    async def check() -> None:
        store = Store.from_url(url)
        state = await store.ledger.subject_state("cust-1")
        assert state is not None and state.purposes["email_marketing"].state == "denied"
        [entry, *_] = await store.ledger.history("cust-1", 10)
        assert entry.decision.source == "repair" and entry.effective_purposes == ["email_marketing"]
        assert "9999-12-31" in (entry.decision.note or "")
        assert [(d.provider, d.status) for d in entry.deliveries] == [("intempt", DeliveryStatus.pending)]
        await store.close()

    asyncio.run(check())
    again = runner.invoke(app, ["subjects", "future-dated", "--config", str(config), "--format", "json"])
    assert json.loads(again.stdout) == []


def test_db_commands_need_only_the_database_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example config names provider secrets no one has set: `db` commands don't need them."""
    for name in ("MASIVO_API_KEY", "WIX_API_KEY", "WIX_SITE_ID", "INTEMPT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONSENT_GATEWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}")
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    runner = CliRunner()

    before = runner.invoke(app, ["db", "current", "--config", str(example)])
    assert before.exit_code == 1 and "no schema" in before.stdout
    upgraded = runner.invoke(app, ["db", "upgrade", "--config", str(example)])
    assert upgraded.exit_code == 0, upgraded.output
    after = runner.invoke(app, ["db", "current", "--config", str(example)])
    assert after.exit_code == 0 and "up to date" in after.stdout
    history = runner.invoke(app, ["db", "history"])
    assert history.exit_code == 0 and history.stdout.splitlines()[-1].startswith("0001  ")
    listed = runner.invoke(app, ["deliveries", "list", "--config", str(example), "--format", "json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


def test_commands_refuse_a_schema_that_is_behind_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "{url}"\n[providers.intempt]\napi_key = "p.s"\norg = "o"\nproject = "p"\n')

    async def empty_file() -> None:  # a database file with no schema in it
        store = Store.from_url(url)
        await store.ping()
        await store.close()

    asyncio.run(empty_file())
    runner = CliRunner()
    for command in (["deliveries", "list"], ["worker"], ["subjects", "future-dated"]):
        result = runner.invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == 1, (command, result.output)
        assert result.output.strip() == "error: the database has no schema: run `consent-gateway db upgrade`"


def test_the_worker_freezes_start_ups_objects_out_of_the_collectors_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``serve`` does (``collect_less``), also with no HTTP port: without it, each of the collector's
    full passes held the worker's event loop, and every push in flight, for ~60 ms."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "config.toml"
    masivo = '[providers.masivo]\nbase_url = "http://127.0.0.1:9/masivo"\napi_key = "masivo-key-0123456789abcdef"\n'
    config.write_text(f'database_url = "{url}"\n[worker]\nhttp_port = 0\n{masivo}')
    prepare(url)
    steps: list[str] = []

    started = asyncio.run

    def run(main: Coroutine[Any, Any, Any]) -> Any:
        if main.__qualname__ != "worker.<locals>.run":  # start-up's own (the schema check)
            return started(main)
        main.close()  # the worker's loop: not run here
        steps.append("ran")
        return None

    monkeypatch.setattr(serve_commands, "collect_less", lambda: steps.append("frozen"))
    monkeypatch.setattr(serve_commands.asyncio, "run", run)
    result = CliRunner().invoke(app, ["worker", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert steps == ["frozen", "ran"]

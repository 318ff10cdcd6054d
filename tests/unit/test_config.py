"""Configuration: ${ENV} references, errors that name the key, no leaking between loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, build_adapters, load_settings, refuse_idle


def test_env_references_are_expanded_and_a_missing_one_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[providers.wix]\napi_key = "${TEST_WIX_KEY}"\nsite_id = "site"\n')
    with pytest.raises(ConfigError, match=r"TEST_WIX_KEY \(for providers\.wix\.api_key\)"):
        load_settings(config)
    monkeypatch.setenv("TEST_WIX_KEY", "wix-secret-value-123")
    adapters = build_adapters(load_settings(config))
    assert adapters["wix"].secrets() == ["wix-secret-value-123"]


def test_a_config_file_applies_to_its_own_load_only(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('database_url = "sqlite+aiosqlite:///elsewhere.db"\n')
    assert load_settings(config).database_url.endswith("elsewhere.db")
    assert Settings().database_url == "sqlite+aiosqlite:///consent-gateway.db"


def test_a_bad_provider_setting_is_named_without_echoing_values(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(providers={"masivo": {"api_key": "masivo-secret-0123", "timeout_s": -1}})
    with pytest.raises(ConfigError) as caught:
        build_adapters(settings)
    assert "providers.masivo.timeout_s" in str(caught.value) and "masivo-secret-0123" not in str(caught.value)
    with pytest.raises(ConfigError, match="unknown provider"):
        build_adapters(Settings(providers={"mailchimp": {}}))


def test_every_missing_variable_is_named_in_one_message(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[providers.wix]\napi_key = "${TEST_UNSET_WIX_KEY}"\nsite_id = "${TEST_UNSET_WIX_SITE}"\n'
        '[providers.masivo]\napi_key = "${TEST_UNSET_MASIVO_KEY}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    for name in ("TEST_UNSET_WIX_KEY", "TEST_UNSET_WIX_SITE", "TEST_UNSET_MASIVO_KEY"):
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "api", "complaints"),
    [
        ({}, True, ["no API token", "no provider"]),
        ({"tokens": [{"name": "app", "sha256": "0" * 64}]}, True, ["no provider"]),
        ({}, False, ["no provider"]),
    ],
    ids=["serve-nothing", "serve-no-provider", "worker-no-provider"],
)
def test_a_server_that_would_do_nothing_refuses_to_start(
    overrides: dict[str, object], api: bool, complaints: list[str]
) -> None:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        refuse_idle(settings, build_adapters(settings), api=api)
    assert [c for c in ("no API token", "no provider") if c in str(caught.value)] == complaints


def test_the_example_config_loads_with_its_secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASIVO_API_KEY", "WIX_API_KEY", "WIX_SITE_ID", "INTEMPT_API_KEY"):
        monkeypatch.setenv(name, "prefix.example-secret-value")
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    settings = load_settings(example)
    assert sorted(build_adapters(settings)) == ["intempt", "masivo", "wix"]

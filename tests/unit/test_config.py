"""Configuration: ${ENV} references, errors that name the key, no leaking between loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, build_adapters, load_settings


def test_env_references_are_expanded_and_a_missing_one_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[providers.wix]\napi_key = "${TEST_WIX_KEY}"\nsite_id = "site"\n')
    with pytest.raises(ConfigError, match=r"providers\.wix\.api_key: environment variable TEST_WIX_KEY"):
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

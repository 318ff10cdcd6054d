"""The provider registry: entry points in, providers out; a broken install is said, never silent."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters import registry
from gateway.cli import app
from gateway.config import ConfigError, Settings, build_adapters


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The entry points the registry sees: the test decides (the cache is cleared around it)."""
    points: list[EntryPoint] = []

    def entry_points(group: str) -> list[EntryPoint]:
        assert group == registry.GROUP
        return points

    monkeypatch.setattr(registry, "entry_points", entry_points)
    registry.providers.cache_clear()
    yield points
    registry.providers.cache_clear()


def test_the_shipped_providers_register_themselves() -> None:
    assert list(registry.providers()) == ["intempt", "masivo", "wix"]
    assert registry.provider("wix").cassette_headers == {"wix-site-id"}


def test_no_provider_installed_is_a_broken_install_said_with_its_fix(installed: list[Any]) -> None:
    with pytest.raises(registry.RegistryError, match="pip install -e"):
        registry.providers()
    settings = Settings(providers={"masivo": {"base_url": "https://masivo.invalid", "api_key": "k" * 20}})
    with pytest.raises(ConfigError, match="no provider is installed"):
        build_adapters(settings)
    for command in (["serve", "--demo"], ["simulate"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and "no provider is installed" in result.output, result.output


def test_an_entry_point_that_is_not_a_provider_is_refused(installed: list[EntryPoint]) -> None:
    installed.append(EntryPoint("acme", "adapters.masivo:PROVIDER", registry.GROUP))  # named acme: not masivo's
    with pytest.raises(registry.RegistryError, match="not the Provider named 'acme'"):
        registry.providers()

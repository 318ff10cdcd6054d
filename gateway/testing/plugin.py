"""The pytest plugin (entry point ``pytest11``): a ``cassette`` marker, the ``provider_cassette``
and ``consent_gateway`` fixtures, ``--gw-record`` and ``--gw-cassette-dir``.

Loading it imports only pytest: everything else is imported when a fixture is used, so having
the package installed without its ``testing`` extra never breaks anyone's pytest.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gateway.testing.harness import GatewayHarness
    from gateway.testing.library import CassetteLibrary, ProviderCassette

OUTCOMES = pytest.StashKey[dict[str, pytest.TestReport]]()
MARKER = (
    "cassette(*names, optional=False, volatile=(), settings=None, description=''): replay the named "
    "'<provider>/<scenario>' cassettes (or record them with --gw-record)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("consent-gateway", "consent-gateway recorded provider interactions")
    group.addoption(
        "--gw-record",
        choices=("none", "once", "all"),
        default="none",
        help="none: replay only (default, CI); once: record missing cassettes; all: record every cassette again",
    )
    group.addoption("--gw-cassette-dir", default=None, help="your cassettes (searched before the shipped ones)")
    parser.addini("gw_cassette_dir", "your cassettes, relative to the rootdir", default="tests/cassettes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(OUTCOMES, {})[report.when] = report
    return report


def passed(node: pytest.Item) -> bool:
    """Whether the test body passed (a recording is written only then)."""
    report = node.stash.get(OUTCOMES, {}).get("call")
    return report is not None and report.passed


def cassette_dir(config: pytest.Config) -> Path:
    option = config.getoption("gw_cassette_dir")
    return Path(option) if option else config.rootpath / str(config.getini("gw_cassette_dir"))


def library(config: pytest.Config) -> CassetteLibrary:
    from gateway.testing.library import CassetteLibrary

    return CassetteLibrary(cassette_dir(config), config.getoption("gw_record"))


def _marked(request: pytest.FixtureRequest) -> tuple[list[str], dict[str, Any]]:
    marker = request.node.get_closest_marker("cassette")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{request.node.nodeid}: add @pytest.mark.cassette('<provider>/<scenario>', ...)")
    return list(marker.args), dict(marker.kwargs)


def _open(request: pytest.FixtureRequest) -> list[ProviderCassette]:
    names, options = _marked(request)
    shelf = library(request.config)
    return [shelf.open(name, **options) for name in names]


def _finish(request: pytest.FixtureRequest, cassettes: list[ProviderCassette]) -> None:
    """Replays are verified (unused recordings, swallowed misses); recordings saved if the test passed."""
    node = request.node
    assert isinstance(node, pytest.Item)
    if not passed(node):
        return
    shelf = library(request.config)
    for cassette in cassettes:
        recorded = cassette.finish()
        if recorded is not None:
            shelf.save(cassette.name, recorded)


def _require_async_runner(request: pytest.FixtureRequest) -> None:
    """An ``async def`` test that pytest-asyncio will not run gets pytest's generic "async def functions
    are not natively supported"; say what to add instead."""
    if inspect.iscoroutinefunction(request.function) and request.node.get_closest_marker("asyncio") is None:
        pytest.fail(
            f"{request.node.nodeid} is an async test without @pytest.mark.asyncio: mark it, or set "
            'asyncio_mode = "auto" in your pytest configuration (pytest-asyncio is in the testing extra)',
            pytrace=False,
        )


@pytest.fixture
def provider_cassette(request: pytest.FixtureRequest) -> Iterator[ProviderCassette]:
    """The marked cassette (one name): ``.settings``, ``.transport``, ``.connect()``."""
    _require_async_runner(request)
    cassettes = _open(request)
    if len(cassettes) != 1:
        raise pytest.UsageError("provider_cassette takes one cassette; use consent_gateway for several")
    yield cassettes[0]
    _finish(request, cassettes)


@pytest.fixture
def consent_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayHarness]:
    """A real gateway on SQLite in ``tmp_path``, each marked cassette answering for its provider.
    Start it with ``async with consent_gateway as gateway:``."""
    from gateway.testing.harness import GatewayHarness

    _require_async_runner(request)
    cassettes = _open(request)
    yield GatewayHarness(cassettes, tmp_path)
    _finish(request, cassettes)

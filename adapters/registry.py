"""The providers this gateway knows: every installed package's ``consent_gateway.providers`` entry point.

A provider ships as one adapter module, one wire-schema module and one simulator, and names them in a
``Provider`` that its package registers::

    [project.entry-points."consent_gateway.providers"]
    acme = "acme_consent.adapter:PROVIDER"

Configuration, ``serve --demo``, ``simulate``, the recorded-mocks library and the CLI find it here;
nothing else in the gateway lists providers. The entry point's name is the provider's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from adapters.base import Adapter

GROUP = "consent_gateway.providers"


@dataclass(frozen=True)
class Provider:
    """What the gateway needs to know about one provider besides its adapter."""

    adapter: type[Adapter]
    simulator: str
    """``module:function`` of the simulator app factory, imported only when a simulator is wanted:
    ``function(faults=None, *, clock=time.time) -> Starlette``; a simulator that sends the provider's
    events (webhooks) also takes ``events_url``, where it sends them."""
    demo: Callable[[str], dict[str, Any]]
    """Its settings for the simulator at a base URL, with throwaway credentials (``serve --demo``)."""
    cassette_headers: frozenset[str] = field(default_factory=frozenset)
    """Request headers, besides content type and credentials, that a recorded cassette keeps because
    they change what the provider does (Wix's ``wix-site-id``)."""

    @property
    def name(self) -> str:
        return self.adapter.name

    def simulator_app(self, faults: Any = None, **options: Any) -> Starlette:
        module, _, function = self.simulator.partition(":")
        factory: Callable[..., Starlette] = getattr(importlib.import_module(module), function)
        return factory(faults, **options)


class RegistryError(RuntimeError):
    """No provider is installed, or an entry point is not one: the gateway refuses to start."""


MISSING = (
    "no provider is installed: the package's entry points are missing (an install made before they existed, "
    "or a checkout that was never installed); install it again: pip install -e ."
)


@cache
def providers() -> Mapping[str, Provider]:
    """Every installed provider, by name (sorted). None at all means the gateway's own metadata is
    missing (the three it ships register themselves): a RegistryError, not a gateway that silently
    delivers nowhere."""
    found: dict[str, Provider] = {}
    for point in entry_points(group=GROUP):
        provider = point.load()
        if not isinstance(provider, Provider) or provider.name != point.name:
            raise RegistryError(f"entry point {point.name} = {point.value!r} is not the Provider named {point.name!r}")
        found[point.name] = provider
    if not found:
        raise RegistryError(MISSING)
    return dict(sorted(found.items()))


def provider(name: str) -> Provider:
    """One provider by name; a KeyError naming the known ones otherwise."""
    try:
        return providers()[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(providers())}") from None


def simulators_app(
    faults: Any = None, *, log_limit: int | None = None, options: Mapping[str, Mapping[str, Any]] | None = None
) -> Starlette:
    """Every provider's simulator on one app, at /<name> (e.g. ``GET /wix/_inspect``), each keeping
    its last ``log_limit`` requests (default: the simulators' own bound); ``options`` holds, by provider
    name, more keyword arguments for its simulator (``{"wix": {"events_url": …}}``)."""
    options = options or {}
    apps = {name: entry.simulator_app(faults, **options.get(name, {})) for name, entry in providers().items()}
    if log_limit is not None:
        for app in apps.values():
            app.state.simulator.keep(log_limit)
    return Starlette(routes=[Mount(f"/{name}", app=app) for name, app in apps.items()])

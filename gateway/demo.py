"""``serve --demo``: SQLite in the working directory, the three simulators in the same
process, providers pointed at them, and a bearer token printed once. Zero set-up."""

from __future__ import annotations

import os
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from adapters.base import EventSource
from adapters.registry import providers, simulators_app
from gateway.config import ApiToken, Settings, load_settings
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.redaction import configure_logging
from gateway.service import Gateway

DEMO_DATABASE = "sqlite+aiosqlite:///consent-gateway-demo.db"


def demo_token() -> tuple[str, bool]:
    """$CONSENT_GATEWAY_TOKEN, or a fresh random token; and whether it was generated here
    (only a generated one may be printed: the caller already knows theirs)."""
    chosen = os.environ.get("CONSENT_GATEWAY_TOKEN")
    return (chosen, False) if chosen else (secrets.token_urlsafe(24), True)


def demo_settings(base_url: str, token: str) -> Settings:
    """Settings for the demo; provider credentials are throwaway values the simulators accept."""
    # every installed provider, on its simulator, over plain http on whatever host the demo binds
    configured: dict[str, dict[str, Any]] = {
        name: provider.demo(f"{base_url}/simulators/{name}") | {"allow_http": True}
        for name, provider in providers().items()
    }
    return load_settings(
        database_url=DEMO_DATABASE,
        tokens=[ApiToken(name="demo", sha256=hash_token(token))],
        providers=configured,
        admin={"secure_cookie": False},  # the demo serves plain http on loopback
        reconcile={"poll_s": 0.5},
    )


def demo_app(host: str, port: int, token: str, settings: Settings | None = None) -> Starlette:
    """The gateway with the simulators mounted under /simulators and providers pointed at them
    (``settings``: the demo's, changed by a test)."""
    base_url = f"http://{host}:{port}"
    gateway = Gateway(settings or demo_settings(base_url, token))
    configure_logging([token, *gateway.secrets()])
    simulators = simulators_app(options=announcing(gateway, base_url))
    return create_app(gateway, extra_routes=[Mount("/simulators", app=simulators)], migrate=True)


def announcing(gateway: Gateway, base_url: str) -> dict[str, dict[str, Any]]:
    """The simulators of providers that send events, pointed at the gateway's own events endpoint,
    so a change made at a simulator reaches the gateway as it would from the provider."""
    return {
        name: {"events_url": f"{base_url}/v1/providers/{name}/events"}
        for name, adapter in gateway.adapters.items()
        if isinstance(adapter, EventSource)
    }

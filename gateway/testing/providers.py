"""Provider settings for recording and replay, derived from each adapter's own Settings model.

No table per provider: a secret field (``SecretStr``) gets the stand-in
``<provider>-<field>.not-a-real-secret``, any other required field ``<provider>-<field>``; a
cassette's recorded non-secret settings and the test's own go on top. Live recording reads
every field from ``CONSENT_GATEWAY_RECORD_<PROVIDER>__<FIELD>`` instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette

from adapters.base import Adapter, ProviderSettings
from adapters.registry import provider as registered

ENV_PREFIX = "CONSENT_GATEWAY_RECORD_"
UNRECORDED = frozenset({"base_url"})  # where the provider was is no part of what it answered


def adapter_class(provider: str) -> type[Adapter]:
    try:
        return registered(provider).adapter
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def secret_fields(provider: str) -> list[str]:
    return [
        name for name, field in adapter_class(provider).Settings.model_fields.items() if field.annotation is SecretStr
    ]


def base_url(provider: str) -> str:
    """Where a provider is reached when no real one is: the simulator in-process, or the replayer."""
    return f"https://{provider}.invalid"


def stand_in_settings(provider: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    secret = set(secret_fields(provider))
    values: dict[str, Any] = {"base_url": base_url(provider)}
    for name, field in adapter_class(provider).Settings.model_fields.items():
        if name in secret:
            values[name] = f"{provider}-{name}.not-a-real-secret"
        elif field.is_required() and name not in values:
            values[name] = f"{provider}-{name}"
    return values | dict(overrides or {})


def live_settings(provider: str) -> dict[str, str] | None:
    """Settings from ``CONSENT_GATEWAY_RECORD_<PROVIDER>__<FIELD>``; None unless every secret is set."""
    prefix = f"{ENV_PREFIX}{provider.upper()}__"
    found = {name[len(prefix) :].lower(): value for name, value in os.environ.items() if name.startswith(prefix)}
    return found if found and all(found.get(name) for name in secret_fields(provider)) else None


def recorded_settings(settings: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """What a cassette keeps of the settings it was recorded with: the non-secret ones."""
    hidden = UNRECORDED | set(secret_fields(provider))
    return {name: value for name, value in sorted(settings.items()) if name not in hidden}


def secrets_of(settings: ProviderSettings) -> dict[str, str]:
    return {name: value.get_secret_value() for name, value in settings.__dict__.items() if isinstance(value, SecretStr)}


class Deadline(httpx.AsyncBaseTransport):
    """A timeout over an in-process transport, which has none of its own (a simulator told to hang)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, seconds: float) -> None:
        self._transport = transport
        self._seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            async with asyncio.timeout(self._seconds):
                return await self._transport.handle_async_request(request)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {self._seconds:g} s", request=request) from None


class Ticks:
    """A clock moving one second per reading: the times a simulator makes up are distinct and
    come in the same order on every run, so their stand-ins do too."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def __call__(self) -> float:
        self._now += 1.0
        return self._now


def simulator(provider: str) -> tuple[Starlette, httpx.AsyncBaseTransport]:
    """A fresh simulator of ``provider`` on a ticking clock, and an in-process transport to it."""
    app = registered(provider).simulator_app(clock=Ticks())
    return app, httpx.ASGITransport(app=app)

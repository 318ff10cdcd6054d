"""Settings: a TOML file, overridable by ``CONSENT_GATEWAY_*`` environment variables.

Secrets appear in the file only as ``${ENV_VAR}`` references, expanded at load time, so a
config file can be committed and shared without leaking a key.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from adapters import Adapter
from adapters.errors import GatewayError
from adapters.registry import RegistryError, providers
from gateway.store.db import Pool
from schemas.consent import DEFAULT_PURPOSES

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SCOPES = ("consents:write", "consents:read", "admin")
CONFIG_FILE: ContextVar[str | None] = ContextVar("consent_gateway_config_file", default=None)


class ConfigError(GatewayError):
    """The configuration cannot be used; the message names the key."""


class ApiToken(BaseModel):
    """A bearer token, stored only as its SHA-256 hex digest."""

    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(default_factory=lambda: list(SCOPES))
    requests_per_minute: float | None = Field(
        default=None, ge=0, description="this token's API request limit; unset: token_requests_per_minute"
    )
    decisions_per_minute: float | None = Field(
        default=None, ge=0, description="decisions this token may record per minute; unset: token_decisions_per_minute"
    )

    @model_validator(mode="after")
    def _known_scopes(self) -> ApiToken:
        unknown = set(self.scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}; known: {list(SCOPES)}")
        return self


class RetrySettings(BaseModel):
    """Short in-process retries first, then a durable re-schedule on the ladder."""

    attempts: int = Field(default=3, ge=1, le=10)
    initial_s: float = Field(default=0.5, ge=0)
    max_s: float = Field(default=10.0, ge=0)
    retry_after_cap_s: float = Field(default=3600.0, ge=0)
    min_after_429_s: float = Field(default=60.0, ge=0, description="a rate-limited provider gets at least this")
    jitter: float = Field(default=0.2, ge=0, lt=1, description="±fraction applied to each ladder step")
    ladder_s: list[float] = Field(default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0])


class WorkerSettings(BaseModel):
    enabled: bool = True
    poll_interval_s: float = Field(default=0.5, gt=0)
    lease_s: float = Field(default=300.0, gt=0)
    batch_size: int = Field(default=50, ge=1, le=1000)
    outcome_gather_s: float = Field(
        default=0.005, ge=0, le=1, description="while pushes are under way, an outcome waits this long for others"
    )
    http_host: str = Field(default="127.0.0.1", description="`consent-gateway worker` serves /metrics here")
    http_port: int = Field(default=8001, ge=0, le=65535, description="0: the worker serves no HTTP")


class ReconcileSettings(BaseModel):
    """Read-back runs: how they walk the subjects, and when they start by themselves."""

    every_s: float = Field(default=0.0, ge=0, description="start a run of every provider this often; 0: never")
    chunk: int = Field(default=500, ge=1, le=10_000, description="subjects read and written per step of a run")
    lease_s: float = Field(default=300.0, gt=0, description="a run whose worker stopped is resumed after this")
    poll_s: float = Field(default=2.0, gt=0, description="how often a worker looks for a queued run")
    max_queued: int = Field(default=4, ge=1, description="runs people may have waiting at once; more is a 429")
    stale_inline: int = Field(
        default=2000,
        ge=0,
        le=10_000,
        description="marked subjects the drift view stores itself before answering; more: it computes every row",
    )


class BackfillSettings(BaseModel):
    """Backfills: how many subjects one transaction enqueues, and how many deliveries may wait at once
    (so a backfill of 100,000 subjects does not fill the outbox ahead of everyone's decisions)."""

    chunk: int = Field(default=500, ge=1, le=10_000, description="subjects enqueued per transaction")
    max_outstanding: int = Field(
        default=2000, ge=1, description="a backfill's deliveries not final yet, at most; more wait for these"
    )
    lease_s: float = Field(default=300.0, gt=0, description="a backfill whose worker stopped is resumed after this")


class AdminSettings(BaseModel):
    """The admin page's session: a signed cookie, so a browser signs in once with an admin token."""

    session_secret: SecretStr | None = Field(
        default=None, description="signs the session cookie; unset: random per process (sign in again on restart)"
    )
    secure_cookie: bool = Field(default=True, description="send the cookie over https only (the demo turns it off)")
    session_max_age_s: int = Field(default=8 * 3600, ge=60)


class DatabaseSettings(BaseSettings):
    """Only where the store is: what ``db upgrade`` and friends need, so they run without any
    provider secret in the environment. Every other key in the file is ignored here."""

    model_config = SettingsConfigDict(env_prefix="CONSENT_GATEWAY_", env_nested_delimiter="__", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///consent-gateway.db"

    @model_validator(mode="before")
    @classmethod
    def _expand_env_references(cls, data: Any) -> Any:
        """``${ENV}`` references are expanded in the keys this model has, and only there."""
        if not isinstance(data, dict):
            return data
        return expand({key: value for key, value in data.items() if key in cls.model_fields}, "")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = CONFIG_FILE.get() or os.environ.get("CONSENT_GATEWAY_CONFIG")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml_file:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources


class Settings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSENT_GATEWAY_", env_nested_delimiter="__", extra="forbid")

    purposes: list[str] = Field(default_factory=lambda: list(DEFAULT_PURPOSES))
    database_pool_size: int = Field(default=5, ge=1, description="store connections each process keeps open")
    database_max_overflow: int = Field(default=10, ge=0, description="more it may open under load, closed after")
    database_pool_timeout_s: float = Field(
        default=30.0, gt=0, description="how long a request waits for a store connection before a 503 store-busy"
    )
    max_clock_skew_s: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="how far ahead of the gateway's clock occurred_at (or a provider's time read back) may be",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_batch_body_bytes: int = Field(default=16_000_000, ge=1024, description="for POST /v1/consents:batch")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection whose request headers are not complete by then is closed"
    )
    body_timeout_s: float = Field(default=30.0, gt=0, description="a request body not complete by then is a 408")
    idempotency_ttl_s: float = Field(default=86_400.0, ge=86_400.0, description="keys are kept at least 24 h")
    idempotency_stale_s: float = Field(
        default=300.0, gt=0, description="a key whose first request never answered is taken over after this"
    )
    tokens: list[ApiToken] = Field(default_factory=list)
    token_requests_per_minute: float = Field(
        default=0.0, ge=0, description="each token's API request limit (429 above it); 0: unlimited"
    )
    token_burst: int = Field(default=20, ge=1, description="requests a token may send at once after an idle spell")
    token_decisions_per_minute: float = Field(
        default=0.0, ge=0, description="decisions each token may record per minute, batches item by item; 0: unlimited"
    )
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="the least severe log line written"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json: one object per line (for collectors); console: for reading in a terminal"
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)

    def pool(self) -> Pool:
        return Pool(self.database_pool_size, self.database_max_overflow, self.database_pool_timeout_s)

    @model_validator(mode="before")
    @classmethod
    def _expand_env_references(cls, data: Any) -> Any:
        return expand(data, "")


def expand(value: Any, where: str) -> Any:
    """Replace ``${NAME}`` with the environment variable; every missing one is named in one
    ConfigError (fix them all at once, not one start-up at a time)."""
    missing: list[str] = []
    expanded = _expand(value, where, missing)
    if missing:
        raise ConfigError("environment variables not set: " + "; ".join(missing))
    return expanded


def _expand(value: Any, where: str, missing: list[str]) -> Any:
    if isinstance(value, dict):
        return {key: _expand(item, f"{where}.{key}" if where else str(key), missing) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, f"{where}[{index}]", missing) for index, item in enumerate(value)]
    if isinstance(value, str):
        absent = [name for name in ENV_REFERENCE.findall(value) if name not in os.environ]
        missing += [f"{name} (for {where})" for name in absent]
        return ENV_REFERENCE.sub(lambda match: os.environ.get(match.group(1), ""), value)
    return value


Loaded = TypeVar("Loaded", bound=DatabaseSettings)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (or $CONSENT_GATEWAY_CONFIG), the environment and overrides."""
    return _load(Settings, path, overrides)


def load_database_settings(path: Path | None = None) -> DatabaseSettings:
    """Only ``database_url``, from the same places: needs no provider secret."""
    return _load(DatabaseSettings, path, {})


def _load(model: type[Loaded], path: Path | None, overrides: dict[str, Any]) -> Loaded:
    token = CONFIG_FILE.set(str(path) if path is not None else None)
    try:
        return model(**overrides)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None
    finally:
        CONFIG_FILE.reset(token)


def refuse_idle(settings: Settings, adapters: dict[str, Adapter], *, api: bool) -> None:
    """A server that would accept nothing, or deliver nowhere, is a mistake: say so at start-up."""
    problems = []
    if api and not settings.tokens:
        problems.append("no API token is configured (add a [[tokens]] block): every request would be refused")
    if not adapters:
        problems.append("no provider is enabled (add a [providers.<name>] section): decisions would go nowhere")
    if problems:
        raise ConfigError("; ".join(problems) + ". See config.example.toml, or try `consent-gateway serve --demo`.")


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    """One adapter per enabled provider, each validated by its own Settings model."""
    adapters: dict[str, Adapter] = {}
    for name, raw in settings.providers.items():
        try:
            known = providers()
        except RegistryError as error:
            raise ConfigError(str(error)) from None
        if name not in known:
            raise ConfigError(f"providers.{name}: unknown provider; known: {', '.join(known)}")
        adapter_cls = known[name].adapter
        try:
            provider_settings = adapter_cls.Settings.model_validate(raw)
        except ValidationError as error:
            raise ConfigError(describe(error, f"providers.{name}")) from None
        unknown = set(provider_settings.purposes) - set(settings.purposes)
        if unknown:
            raise ConfigError(f"providers.{name}.purposes: unknown purpose {sorted(unknown)}")
        if provider_settings.enabled:
            adapters[name] = adapter_cls(provider_settings)
    return adapters


def describe(error: ValidationError, prefix: str = "") -> str:
    """A one-line summary naming each bad key, without echoing values (they may be secrets)."""
    parts = []
    for item in error.errors(include_input=False):
        key = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        parts.append(f"{key}: {item['msg']}")
    return "; ".join(parts)

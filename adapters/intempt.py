"""Intempt: one ``POST …/consents/data`` per consent category that changed.

Intempt quirks kept here: consent is recorded per category with an accept/reject action
(no read-back, so "changed" means "differs from what Intempt last acknowledged"); the API
key rides in the ``apiKey`` query parameter; the timestamp unit is disputed (see
``IntemptSettings``); ``{error, message}`` error bodies.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import ConfigDict, Field, SecretStr, ValidationError, field_validator

from adapters.base import (
    Ack,
    Adapter,
    Flow,
    Projection,
    ProviderSettings,
    json_body,
    json_request,
    validation_reason,
)
from adapters.errors import LocalValidationError
from adapters.registry import Provider
from schemas.consent import PurposeState, SubjectState, most_restrictive
from schemas.intempt import ConsentData, ErrorBody, TimestampUnit, epoch

DEFAULT_CATEGORIES: dict[str, str] = {
    "email_marketing": "email",
    "sms_marketing": "sms",
    "push_notifications": "push",
    "analytics": "analytics",
    "behavioral_campaigns": "personalization",
}
"""Gateway purpose -> Intempt consent category; categories "must already exist in org settings"."""

ACTION: dict[PurposeState, str] = {
    PurposeState.granted: "accept",
    PurposeState.denied: "reject",
    PurposeState.pending: "reject",  # double opt-in not confirmed yet: no consent to act on
}

UNLIMITED = "unlimited"  # the docs: "if no expiration date is necessary … 'unlimited'"


class IntemptSettings(ProviderSettings):
    """Intempt settings.

    ``timestamp_unit``: the docs say the consent ``timestamp`` is "in milliseconds"; the
    official Python SDK sends seconds ("The consent endpoint compares timestamp * 1000
    against millisecond bounds") and the server silently replaces an out-of-range value
    (past 2040) with its own clock, so a timestamp sent in ms is always replaced: the
    decision's own time is lost while the delivery succeeds. The default is what the server
    reads, seconds; ``"ms"`` (as documented) is kept for a server that reads the docs' unit,
    and the gateway warns at every start while it is set (``Adapter.cautions``).
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a malformed key must not echo in errors

    api_key: SecretStr = Field(description="'prefix.secret', as Intempt issues it")
    org: str = Field(min_length=1)
    project: str = Field(min_length=1)
    timestamp_unit: TimestampUnit = "s"
    base_url: str = "https://api.intempt.com"
    purposes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CATEGORIES))

    @field_validator("api_key")
    @classmethod
    def _prefix_dot_secret(cls, value: SecretStr) -> SecretStr:
        prefix, dot, secret = value.get_secret_value().partition(".")
        if not (prefix and dot and secret):
            raise ValueError("must be the 'prefix.secret' key Intempt issues")
        return value


class IntemptAuth(httpx.Auth):
    """Adds ``?apiKey=<prefix.secret>``, the form the docs give (the SDK uses Basic auth).

    A key in the URL reaches anything that logs URLs (httpx logs them at INFO), so the
    dispatcher must keep httpx's request log off or redacted for this provider.
    """

    def __init__(self, api_key: SecretStr) -> None:
        self._api_key = api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_set_param("apiKey", self._api_key.get_secret_value())
        yield request


class IntemptAdapter(Adapter):
    """Intempt holds one accept/reject per consent category."""

    name: ClassVar[str] = "intempt"
    Settings: ClassVar[type[ProviderSettings]] = IntemptSettings
    volatile: ClassVar[tuple[str, ...]] = ("timestamp",)
    settings: IntemptSettings

    def cautions(self) -> list[str]:
        if self.settings.timestamp_unit == "s":
            return []
        return [
            'timestamp_unit = "ms": Intempt\'s server reads seconds and replaces a timestamp past 2040 with '
            'the time it arrives, so every decision\'s own time is lost at Intempt (set "s", the default)'
        ]

    def auth(self) -> IntemptAuth:
        return IntemptAuth(self.settings.api_key)

    def project(self, state: SubjectState) -> Projection:
        """``{category: {"action": accept|reject, "validUntil": ms|"unlimited"}}``.

        Several purposes on one category: the most restrictive wins. ``validUntil`` is part
        of each category's value because a new expiry needs a new POST as much as a new action.
        """
        valid_until: int | str = UNLIMITED if state.expires_at is None else epoch(state.expires_at, "ms")
        return {
            category: {"action": ACTION[most_restrictive(states)], "validUntil": valid_until}
            for category, states in sorted(state.purposes_in(self.settings.purposes).items())
        }

    def push(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> Flow:
        """One POST per category whose value differs from the last acknowledged one.

        Every body is validated before the first request, so a bad one sends nothing.
        Intempt has no idempotency key: a retry after a partial failure re-sends the
        categories that did succeed, with the same body.
        """
        desired = self.project(state)
        bodies = {
            category: self._body(state, category, value)
            for category, value in desired.items()
            if previous.get(category) != value
        }
        path = f"/v1/{quote(self.settings.org, safe='')}/projects/{quote(self.settings.project, safe='')}"
        for category, body in bodies.items():
            written = PurposeState.granted if body["action"] == ACTION[PurposeState.granted] else PurposeState.denied
            writes = {category: (written, state.occurred_at)}
            response = yield json_request("POST", f"{path}/consents/data", body, writes=writes)
            self.check(response)
        return Ack(acknowledged=desired)

    def _body(self, state: SubjectState, category: str, value: Mapping[str, Any]) -> dict[str, Any]:
        unit = self.settings.timestamp_unit
        body = {
            "action": value["action"],
            "timestamp": epoch(state.occurred_at, unit),
            "validUntil": value["validUntil"],
            "source": state.source,
            "category": category,
            "userId": state.subject_id,
            "email": state.email,
            "message": state.note,
        }
        try:
            data = ConsentData.model_validate(body, context={"timestamp_unit": unit})
        except ValidationError as error:
            raise LocalValidationError(
                self.name, f"Intempt's consent rules reject {category!r}: {validation_reason(error)}"
            ) from None
        return data.model_dump(exclude_none=True)

    def error_text(self, response: httpx.Response) -> str:
        """Intempt errors are ``{error, message}``, e.g. "Invalid request: Required field 'action' …"."""
        try:
            body = ErrorBody.model_validate(json_body(response))
        except ValidationError:
            return super().error_text(response)
        return f"{body.error}: {body.message}"


PROVIDER = Provider(
    IntemptAdapter,
    simulator="adapters.simulators.intempt:create_app",
    demo=lambda base_url: {
        "base_url": base_url,
        "api_key": f"demo.{secrets.token_hex(16)}",
        "org": "demo-organization",
        "project": "demo-project",
    },
)

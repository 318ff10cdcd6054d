"""Acme's adapter: one PUT of the channels that changed; a read-back GET per person."""

from __future__ import annotations

import secrets
from collections.abc import Generator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr, ValidationError

from acme_consent.wire import Channel, Consent, Problem
from adapters.base import (
    Ack,
    Adapter,
    Flow,
    Observable,
    Observation,
    Projection,
    ProviderSettings,
    ReadFlow,
    json_body,
    json_request,
)
from adapters.registry import Provider
from schemas.consent import PurposeState, SubjectState, most_restrictive


class AcmeSettings(ProviderSettings):
    purposes: dict[str, str] = {"email_marketing": "newsletter", "sms_marketing": "texts"}
    api_key: SecretStr
    account: str = "main"


class AcmeAuth(httpx.Auth):
    def __init__(self, key: SecretStr, account: str) -> None:
        self._key, self._account = key, account

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["authorization"] = f"Bearer {self._key.get_secret_value()}"
        request.headers["acme-account"] = self._account
        yield request


class AcmeAdapter(Adapter, Observable):
    name = "acme"
    Settings = AcmeSettings
    volatile: ClassVar[tuple[str, ...]] = ("updated_at",)
    read_batch: ClassVar[int] = 1

    def auth(self) -> httpx.Auth:
        assert isinstance(self.settings, AcmeSettings)
        return AcmeAuth(self.settings.api_key, self.settings.account)

    def project(self, state: SubjectState) -> Projection:
        grouped = state.purposes_in(self.settings.purposes)
        return {term: _flag(most_restrictive(states)) for term, states in grouped.items()}

    def push(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> Flow:
        desired = self.project(state)
        changed = {term: value for term, value in desired.items() if previous.get(term) != value}
        if changed:
            when = state.occurred_at
            body = Consent(
                channels={
                    term: Channel(subscribed=value == "granted", updated_at=when) for term, value in changed.items()
                }
            )
            writes = {term: (PurposeState(value), when) for term, value in changed.items()}
            response = yield json_request("PUT", _path(state.subject_id), body.model_dump(mode="json"), writes=writes)
            self.check(response)
        return Ack(acknowledged=desired)

    def read(self, states: Sequence[SubjectState]) -> ReadFlow:
        found: dict[str, Observation] = {}
        for state in states:
            response = yield json_request("GET", _path(state.subject_id), expect=(404,))
            if response.status_code == 404:
                found[state.subject_id] = Observation()
                continue
            self.check(response)
            consent = Consent.model_validate(json_body(response))
            found[state.subject_id] = Observation(
                held={
                    term: "granted" if channel.subscribed else "denied" for term, channel in consent.channels.items()
                },
                changed_at={term: channel.updated_at for term, channel in consent.channels.items()},
            )
        return found

    def term_states(self, projection: Projection) -> dict[str, PurposeState]:
        return {term: PurposeState(value) for term, value in projection.items() if value in ("granted", "denied")}

    def error_text(self, response: httpx.Response) -> str:
        try:
            return Problem.model_validate(json_body(response)).error
        except ValidationError:
            return super().error_text(response)


def _flag(state: PurposeState) -> str:
    return "granted" if state is PurposeState.granted else "denied"


def _path(subject_id: str) -> str:
    return f"/v1/people/{quote(subject_id, safe='')}/consent"


PROVIDER = Provider(
    AcmeAdapter,
    simulator="acme_consent.simulator:create_app",
    demo=lambda base_url: {"base_url": base_url, "api_key": secrets.token_hex(16)},
    cassette_headers=frozenset({"acme-account"}),
)

"""A minimal provider for testing the gateway without any real provider's quirks."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from adapters.base import Ack, Adapter, Flow, Projection, ProviderSettings, json_request
from schemas.consent import SubjectState, most_restrictive

FAKE_SECRET = "fake-secret-value-0123456789"


class FakeSettings(ProviderSettings):
    base_url: str = "https://fake.example"
    purposes: dict[str, str] = {"email_marketing": "email", "sms_marketing": "sms"}
    api_key: SecretStr = SecretStr(FAKE_SECRET)


class FakeAuth(httpx.Auth):
    def __init__(self, key: SecretStr) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["authorization"] = f"Bearer {self.key.get_secret_value()}"
        yield request


class FakeAdapter(Adapter):
    """PUTs the full projection to ``/consents/{subject}``."""

    name = "fake"
    Settings = FakeSettings

    def auth(self) -> httpx.Auth:
        assert isinstance(self.settings, FakeSettings)
        return FakeAuth(self.settings.api_key)

    def project(self, state: SubjectState) -> Projection:
        grouped = state.purposes_in(self.settings.purposes)
        return {term: most_restrictive(states).value for term, states in grouped.items()}

    def push(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> Flow:
        response = yield json_request("PUT", f"/consents/{state.subject_id}", self.project(state))
        self.check(response)
        return Ack(acknowledged=self.project(state), memo={"pushes": int(memo.get("pushes", 0)) + 1})


def fake_adapter(**settings: Any) -> FakeAdapter:
    return FakeAdapter(FakeSettings(**settings))

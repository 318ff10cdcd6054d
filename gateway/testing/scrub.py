"""Secrets out of recordings, before anything is written.

Replaced wherever they appear: every configured secret value (``<redacted:api_key>``), JWTs,
credential headers (keeping the scheme word, so ``Bearer <redacted:jwt>`` still says how the
provider authenticates), secret query parameters (Intempt's ``apiKey``) and JSON fields named
like secrets. ``find_leaks`` is the independent check the recorder and the guard test run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.testing.cassette import Interaction, RecordedRequest, RecordedResponse

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{8,}=*", re.IGNORECASE)
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"})
SECRET_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token", "client_secret", "signature"})
SECRET_FIELD = re.compile(r"secret|token|password|api[_-]?key", re.IGNORECASE)
MIN_SECRET = 4  # shorter values would shred ordinary text and protect nothing


def redacted(name: str) -> str:
    return f"<redacted:{name}>"


class Scrubber:
    """Scrubs recorded exchanges of one provider, whose secret settings are ``secrets`` (name → value)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(
            ((name, value) for name, value in secrets.items() if len(value) >= MIN_SECRET),
            key=lambda item: -len(item[1]),
        )

    def text(self, value: str) -> str:
        for name, secret in self._secrets:
            value = value.replace(secret, redacted(name))
        return JWT.sub(redacted("jwt"), value)

    def _credential(self, name: str, value: str) -> str:
        """A credential header's value: its scheme word kept, the credential redacted."""
        scheme, space, credential = value.partition(" ")
        if not space:
            scheme, credential = "", value
        scrubbed = self.text(credential)
        if scrubbed == credential or not scrubbed.startswith("<redacted:"):
            scrubbed = redacted(name)
        return f"{scheme} {scrubbed}" if scheme else scrubbed

    def json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {
                key: redacted(key) if SECRET_FIELD.search(key) and isinstance(item, str) else self.json(item)
                for key, item in value.items()
            }
        return value

    def _headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            name: self._credential(name, value) if name in SECRET_HEADERS else self.text(value)
            for name, value in headers.items()
        }

    def _param(self, name: str, value: str) -> str:
        if name.lower() not in SECRET_PARAMS:
            return self.text(value)
        scrubbed = self.text(value)
        return scrubbed if scrubbed.startswith("<redacted:") else redacted(name)

    def request(self, request: RecordedRequest) -> RecordedRequest:
        return RecordedRequest(
            method=request.method,
            path=self.text(request.path),
            query=[(name, self._param(name, value)) for name, value in request.query],
            headers=self._headers(request.headers),
            body=self.json(request.body),
            text=None if request.text is None else self.text(request.text),
        )

    def response(self, response: RecordedResponse) -> RecordedResponse:
        return RecordedResponse(
            status=response.status,
            headers=self._headers(response.headers),
            body=self.json(response.body),
            text=None if response.text is None else self.text(response.text),
        )

    def interaction(self, interaction: Interaction) -> Interaction:
        response = interaction.response
        return Interaction(
            request=self.request(interaction.request),
            response=None if response is None else self.response(response),
            error=interaction.error,
        )


def find_leaks(text: str, secrets: Mapping[str, str] = {}) -> list[str]:
    """What in ``text`` looks like a credential: a configured secret, a JWT, a Bearer token."""
    leaks = [f"the value of {name}" for name, value in secrets.items() if len(value) >= MIN_SECRET and value in text]
    leaks += [f"a JWT ({match[:12]}…)" for match in JWT.findall(text)]
    leaks += [f"a bearer credential ({match[:12]}…)" for match in BEARER.findall(text)]
    return leaks

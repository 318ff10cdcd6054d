"""Bearer-token auth with scopes. Tokens are configured as SHA-256 digests, never in clear."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import ApiToken
from gateway.refusals import Refusal
from schemas.problem import FieldError

Endpoint = Callable[[Request], Awaitable[Response]]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self.tokens = list(tokens)

    def principal(self, request: Request) -> ApiToken:
        """The configured token the request's bearer token matches; 401 when none does."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("send 'Authorization: Bearer <token>'")
        found = self.find(token.strip())
        if found is None:
            raise unauthorized("the bearer token is not valid")
        return found

    def find(self, token: str) -> ApiToken | None:
        """The configured token ``token`` is, compared by digest in constant time."""
        return self.by_digest(hash_token(token))

    def by_digest(self, digest: str) -> ApiToken | None:
        """The configured token whose digest this is: None once it was removed from the config."""
        matches = [configured for configured in self.tokens if hmac.compare_digest(configured.sha256, digest)]
        return matches[0] if matches else None


def unauthorized(detail: str) -> Refusal:
    """A 401 naming the header at fault, as every other refusal names its field."""
    return Refusal(
        401,
        "unauthorized",
        "Authentication required",
        detail,
        [FieldError(field="Authorization", message=detail)],
        headers={"WWW-Authenticate": 'Bearer realm="consent-gateway"'},
    )


def requires(scope: str) -> Callable[[Endpoint], Endpoint]:
    """Guard an endpoint: 401 without a valid token, 403 when its scopes lack ``scope``, 429
    when the token is over its request limit."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            principal = request.app.state.authenticator.principal(request)
            request.state.principal = principal
            if scope not in principal.scopes and "admin" not in principal.scopes:
                raise Refusal(403, "forbidden", "Insufficient scope", f"this needs the '{scope}' scope")
            await request.app.state.limits.check(principal)
            return await endpoint(request)

        guarded.required_scope = scope  # type: ignore[attr-defined]  # read by the OpenAPI builder
        return guarded

    return decorate

"""Per-token request limits on the API, so one misbehaving client cannot starve the others."""

from __future__ import annotations

import math

from gateway.config import ApiToken, Settings
from gateway.problems import ProblemError
from gateway.ratelimit import Admission
from gateway.store import Store


class TokenLimits:
    """Each token's admission, made on its first request (tokens come from config only)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.default = settings.token_requests_per_minute
        self.burst = settings.token_burst
        self.admissions: dict[str, Admission | None] = {}

    def admission(self, token: ApiToken) -> Admission | None:
        if token.name not in self.admissions:
            per_minute = self.default if token.requests_per_minute is None else token.requests_per_minute
            self.admissions[token.name] = (
                self.store.admission(token.name, per_minute, self.burst) if per_minute > 0 else None
            )
        return self.admissions[token.name]

    async def check(self, token: ApiToken) -> None:
        """A 429 problem with Retry-After when ``token`` is over its limit; nothing is recorded."""
        admission = self.admission(token)
        wait = 0.0 if admission is None else await admission.admit()
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ProblemError(
                429,
                "too-many-requests",
                "Too many requests",
                f"token '{token.name}' is over its request limit; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

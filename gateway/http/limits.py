"""Per-token request limits on the API, so one misbehaving client cannot starve the others."""

from __future__ import annotations

import math

from gateway.config import ApiToken, Settings
from gateway.refusals import Refusal
from gateway.store import Store
from gateway.store.ratelimit import Admission
from schemas.api import MAX_BATCH


class TokenLimits:
    """Each token's admissions, made on first use (tokens come from config only): one for its
    requests, one for the decisions it records (a 1,000-item batch is one request, 1,000 decisions)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.admissions: dict[tuple[str, str], Admission | None] = {}

    def admission(self, token: ApiToken, what: str) -> Admission | None:
        if (token.name, what) not in self.admissions:
            per_minute, burst = self._limit(token, what)
            key = token.name if what == "requests" else f"{token.name}#{what}"
            self.admissions[token.name, what] = self.store.admission(key, per_minute, burst) if per_minute > 0 else None
        return self.admissions[token.name, what]

    def _limit(self, token: ApiToken, what: str) -> tuple[float, float]:
        """Per minute (the token's own, else the default) and how many at once after an idle spell:
        a whole batch's decisions."""
        settings = self.settings
        if what == "requests":
            own, default, burst = token.requests_per_minute, settings.token_requests_per_minute, settings.token_burst
            return (default if own is None else own), burst
        own, default = token.decisions_per_minute, settings.token_decisions_per_minute
        return (default if own is None else own), MAX_BATCH

    async def check(self, token: ApiToken) -> None:
        """A 429 problem with Retry-After when ``token`` is over its request limit; nothing is recorded."""
        await self._admit(token, "requests", 1)

    async def spend_decisions(self, token: ApiToken, count: int) -> None:
        """A 429 problem with Retry-After when recording ``count`` more decisions would take ``token``
        over its decision limit; then none of them is recorded."""
        await self._admit(token, "decisions", count)

    async def _admit(self, token: ApiToken, what: str, cost: int) -> None:
        admission = self.admission(token, what)
        wait = 0.0 if admission is None or cost == 0 else await admission.admit(cost)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Refusal(
                429,
                "too-many-requests",
                "Too many requests",
                f"token '{token.name}' is over its {what} limit; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

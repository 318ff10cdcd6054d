"""Replay: a respx router answering from a cassette, for sync and async httpx clients.

Interactions are consumed in recorded order: a request takes the first unused interaction
that matches it, so a 503 then a 200 for the same request replay in turn. A request with no
match raises ``CassetteMiss`` with a diff against the nearest recording, and the miss is kept,
so one swallowed by a worker's retry loop still fails the test at ``verify()``.
"""

from __future__ import annotations

import httpx
import respx

from gateway.testing import matching
from gateway.testing.cassette import Cassette, Interaction
from gateway.testing.exchange import recorded_request, to_response


class CassetteMiss(AssertionError):
    """A request the cassette has no (unused) recording of."""


class UnusedInteractions(AssertionError):
    """The test ended before making every recorded request."""


FAILURES: dict[str, type[httpx.TransportError]] = {"timeout": httpx.ReadTimeout, "connect": httpx.ConnectError}


class Replayer:
    def __init__(self, cassette: Cassette, base_url: str, *, name: str = "", optional: bool = False) -> None:
        self.cassette = cassette
        self.name = name or cassette.provider
        self.optional = optional
        self._base_url = base_url
        self._keys = [matching.key(item.request, cassette.volatile) for item in cassette.interactions]
        self._used = [False] * len(self._keys)
        self.misses: list[CassetteMiss] = []
        self.router = respx.Router(assert_all_called=False)
        self.router.route().mock(side_effect=self._answer)
        self.transport = httpx.MockTransport(self.router.async_handler)
        self.sync_transport = httpx.MockTransport(self.router.handler)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        wanted = matching.key(recorded_request(request, self._base_url), self.cassette.volatile)
        for index, recorded in enumerate(self._keys):
            if not self._used[index] and recorded == wanted:
                self._used[index] = True
                return self._outcome(self.cassette.interactions[index], request)
        raise self._miss(wanted)

    def _outcome(self, interaction: Interaction, request: httpx.Request) -> httpx.Response:
        if interaction.response is None:
            raise FAILURES[interaction.error or "connect"](f"recorded {interaction.error}", request=request)
        return to_response(interaction.response, request)

    def _miss(self, wanted: str) -> CassetteMiss:
        unused = [key for key, used in zip(self._keys, self._used, strict=True) if not used]
        candidates = unused or self._keys
        index = matching.nearest(wanted, candidates)
        if index is None:
            detail = "the cassette has no interactions"
        else:
            state = "nearest unused" if unused else "every interaction is used; nearest"
            detail = f"{state} recording:\n{matching.diff(candidates[index], wanted)}"
        miss = CassetteMiss(f"cassette {self.name}: no recording of this request; {detail}")
        self.misses.append(miss)
        return miss

    def unused(self) -> list[Interaction]:
        return [item for item, used in zip(self.cassette.interactions, self._used, strict=True) if not used]

    def verify(self) -> None:
        """Fail for any miss (even one the code under test swallowed), then for unused recordings."""
        if self.misses:
            raise self.misses[0]
        unused = self.unused()
        if unused and not self.optional:
            listed = "\n".join(f"  {item.request.method} {item.request.path}" for item in unused)
            raise UnusedInteractions(f"cassette {self.name}: {len(unused)} recorded request(s) never made:\n{listed}")

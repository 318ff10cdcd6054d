"""Recording: an httpx transport in front of the real one (a live provider or a simulator).

Each exchange is scrubbed and normalized as it happens; the client gets the provider's real
answer. ``cassette()`` refuses to hand over a recording in which ``find_leaks`` still finds a
credential, so a scrubbing gap fails the recording instead of landing in a commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from gateway.testing.cassette import Cassette, Failure, Interaction
from gateway.testing.exchange import recorded_request, recorded_response
from gateway.testing.normalize import Normalizer
from gateway.testing.scrub import Scrubber, find_leaks

DROPPED = ("content-encoding", "transfer-encoding", "content-length")  # the body is handed on decoded


class SecretLeak(AssertionError):
    """A recording still holds a credential after scrubbing; nothing was written."""


class Recorder(httpx.AsyncBaseTransport):
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        provider: str,
        base_url: str,
        secrets: Mapping[str, str],
        description: str = "",
        settings: Mapping[str, Any] | None = None,
        volatile: Sequence[str] = (),
    ) -> None:
        self._transport = transport
        self._base_url = base_url
        self._secrets = dict(secrets)
        self._scrubber = Scrubber(secrets)
        self._normalizer = Normalizer()
        self._cassette = Cassette(
            provider=provider, description=description, settings=dict(settings or {}), volatile=sorted(set(volatile))
        )

    def _keep(self, request: httpx.Request, response: httpx.Response | None, error: Failure | None) -> None:
        interaction = Interaction(
            request=recorded_request(request, self._base_url),
            response=None if response is None else recorded_response(response),
            error=error,
        )
        self._cassette.interactions.append(self._normalizer.interaction(self._scrubber.interaction(interaction)))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.TimeoutException:
            self._keep(request, None, "timeout")
            raise
        except httpx.ConnectError:
            self._keep(request, None, "connect")
            raise
        content = await response.aread()
        await response.aclose()
        headers = [(name, value) for name, value in response.headers.multi_items() if name.lower() not in DROPPED]
        answer = httpx.Response(response.status_code, headers=headers, content=content, request=request)
        self._keep(request, answer, None)
        return answer

    async def aclose(self) -> None:
        await self._transport.aclose()

    def cassette(self) -> Cassette:
        """The recording so far; raises SecretLeak rather than return one holding a credential."""
        leaks = find_leaks(self._cassette.dumps(), self._secrets)
        if leaks:
            raise SecretLeak(f"{self._cassette.provider} recording still holds {', '.join(sorted(set(leaks)))}")
        return self._cassette.model_copy(deep=True)

"""``Idempotency-Key`` handling shared by the endpoints that record decisions."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response

from gateway.http.openapi import Param
from gateway.http.responses import JSONResponse
from gateway.http.state import gateway_of
from gateway.refusals import Refusal, bad_parameter
from gateway.store.idempotency import Binding, IdempotencyKeys, Verdict, kept, rebuilt

log = structlog.get_logger("consent_gateway.api")
HEADER = "Idempotency-Key"
KEY_PARAM = Param(
    HEADER,
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255},
    "makes a retry safe: the same key and body get the original response for 24 h",
)
Bind = Callable[[int], Binding | None]
"""The binding for item N of the request (``None`` without a key), for ``Gateway.record``."""
Produce = Callable[[Bind], Awaitable[tuple[int, bytes]]]
"""Records and answers: a status and the JSON body, already serialized."""


def _unbound(_item: int) -> None:
    return None


async def idempotent(request: Request, canonical_body: Callable[[], str], produce: Produce) -> Response:
    """Run ``produce`` once per key and body; answer a retry with the stored response.

    ``produce`` records each decision with the binding it is given, so even a retry after a
    failure that left no stored response answers the decisions already recorded.
    """
    key = request.headers.get(HEADER)
    if key is None:
        status, payload = await produce(_unbound)
        return Response(payload, status, media_type="application/json")
    if not 0 < len(key) <= 255:
        message = "must be 1 to 255 characters"
        raise bad_parameter(HEADER, message)
    gateway = gateway_of(request)
    settings = gateway.settings
    keys = gateway.store.keys
    scope = request.state.principal.name
    digest = hashlib.sha256(canonical_body().encode()).hexdigest()
    lookup = await keys.begin(
        scope, key, digest, gateway.clock(), settings.idempotency_ttl_s, settings.idempotency_stale_s
    )
    if lookup.verdict is Verdict.replay:
        assert lookup.status is not None, "a stored answer has its status"
        answer = await rebuilt(lookup.body, gateway.store.ledger)
        return JSONResponse(answer, lookup.status, {"Idempotent-Replayed": "true"})
    if lookup.verdict is Verdict.mismatch:
        raise Refusal(
            409,
            "idempotency-key-reused",
            "Idempotency key reused",
            f"this {HEADER} was used with a different request body",
        )
    if lookup.verdict is Verdict.in_progress:
        raise Refusal(
            409,
            "idempotency-key-in-progress",
            "Request in progress",
            f"a request with this {HEADER} is still being processed; retry later",
            headers={"Retry-After": "1"},
        )
    expires_at = lookup.expires_at
    assert expires_at is not None

    def bind(item: int) -> Binding:
        return Binding(scope, key, item, expires_at)

    try:
        status, payload = await produce(bind)
        await keys.complete(scope, key, status, kept(orjson.loads(payload)))
    except BaseException:  # the key is handed to the retry at once (storing the answer may fail too)
        await _release(keys, scope, key)
        raise
    return Response(payload, status, media_type="application/json")


RELEASE_RETRIES_S = (1.0, 2.0, 4.0, 8.0, 16.0)
_releasing: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references


async def _release(keys: IdempotencyKeys, scope: str, key: str) -> None:
    """Release the key after a failure. If the store refuses that too (it is busy), try again in
    the background for a while, so the client's retry is not answered 'in progress' until
    ``idempotency_stale_s``; the request's own error is what the client sees now."""
    try:
        await keys.release(scope, key)
    except Exception as error:
        log.warning("idempotency_release_deferred", error=type(error).__name__)
        task = asyncio.create_task(_release_later(keys, scope, key))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)


async def _release_later(keys: IdempotencyKeys, scope: str, key: str) -> None:
    for delay in RELEASE_RETRIES_S:
        await asyncio.sleep(delay)
        try:
            await keys.release(scope, key)
            return
        except Exception as error:
            log.warning("idempotency_release_deferred", error=type(error).__name__)

"""``/v1/consents``: record a decision and read it back with its deliveries."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth import requires
from gateway.openapi import Operation, Param, documented
from gateway.problems import ProblemError, bad_parameter, invalid
from gateway.routes.idempotent import KEY_PARAM, idempotent
from schemas.api import BatchEnvelope, BatchIn, BatchOut, BatchResult, DecisionOut
from schemas.consent import Decision
from schemas.problem import FieldError

MAX_WAIT_S = 60.0
WAIT_PARAM = Param(
    "wait",
    "query",
    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
    "seconds to wait for every delivery to be final; 200 if they are, else 202",
)


@requires("consents:write")
@documented(
    Operation(
        "Record one consent decision", DecisionOut, 202, body=Decision, params=[WAIT_PARAM, KEY_PARAM], also=[200]
    )
)
async def create_consent(request: Request) -> Response:
    gateway = request.app.state.gateway
    wait = _wait_seconds(request)
    decision = _decision(await read_body(request, gateway.settings.max_body_bytes), gateway.settings.purposes)

    async def produce() -> tuple[int, Any]:
        recorded = await gateway.record(decision)
        if wait:
            recorded = await gateway.wait_until_final(recorded.id, wait)
        done = all(delivery.status.final for delivery in recorded.deliveries)
        return (200 if wait and done else 202), recorded.model_dump(mode="json")

    response = await idempotent(request, decision.model_dump_json(), produce)
    response.headers["Location"] = f"/v1/consents/{json.loads(response.body)['id']}"
    return response


@requires("consents:write")
@documented(
    Operation(
        "Record up to 1,000 decisions, each accepted or rejected on its own", BatchOut, body=BatchIn, params=[KEY_PARAM]
    )
)
async def create_consents_batch(request: Request) -> Response:
    gateway = request.app.state.gateway
    raw = await read_body(request, gateway.settings.max_batch_body_bytes)
    try:
        items = BatchEnvelope.model_validate_json(raw).decisions
    except ValidationError as error:
        raise invalid(error) from None

    async def produce() -> tuple[int, Any]:
        results = [await _batch_item(gateway, index, item) for index, item in enumerate(items)]
        return 200, BatchOut(results=results).model_dump(mode="json", exclude_none=True)

    return await idempotent(request, json.dumps(items, sort_keys=True), produce)


async def _batch_item(gateway: Any, index: int, item: Any) -> BatchResult:
    try:
        decision = _decision(json.dumps(item).encode(), gateway.settings.purposes, prefix=f"decisions.{index}")
    except ProblemError as rejected:
        return BatchResult(index=index, status="rejected", problem=rejected.problem)
    return BatchResult(index=index, status="accepted", decision=await gateway.record(decision))


def _decision(body: bytes, purposes: list[str], prefix: str = "") -> Decision:
    try:
        return Decision.model_validate_json(body, context={"purposes": purposes})
    except ValidationError as error:
        raise invalid(error, prefix) from None


@requires("consents:read")
@documented(
    Operation(
        "One decision and the status of each provider delivery",
        DecisionOut,
        params=[Param("decision_id", "path", {"type": "string"})],
    )
)
async def get_consent(request: Request) -> Response:
    found = await request.app.state.gateway.store.ledger.decision(request.path_params["decision_id"])
    if found is None:
        raise ProblemError(404, "not-found", "No such decision")
    return JSONResponse(found.model_dump(mode="json"))


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        message = f"must be a number of seconds from 0 to {MAX_WAIT_S:g}"
        raise bad_parameter("wait", message)
    return wait


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes whether or not Content-Length says so."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> ProblemError:
    return ProblemError(
        413,
        "body-too-large",
        "Request body too large",
        f"the limit is {limit} bytes",
        [FieldError(field="body", message=f"larger than {limit} bytes")],
    )


routes = [
    Route("/v1/consents", create_consent, methods=["POST"]),
    Route("/v1/consents:batch", create_consents_batch, methods=["POST"]),
    Route("/v1/consents/{decision_id}", get_consent, methods=["GET"]),
]

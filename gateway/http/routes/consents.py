"""``/v1/consents``: record a decision and read it back with its deliveries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
from pydantic import Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.auth import requires
from gateway.http.openapi import Operation, Param, documented, path_param
from gateway.http.params import (
    UUID_TEXT,
    Parsed,
    PlainDecimal,
    QueryModel,
    parse_json,
    path_id,
    query,
    read_body,
    refuse_repeated_keys,
    require_json,
)
from gateway.http.responses import JSONResponse
from gateway.http.routes.idempotent import KEY_PARAM, Bind, idempotent
from gateway.http.routes.links import decision_links
from gateway.http.state import gateway_of
from gateway.refusals import Refusal, erased, invalid
from gateway.service import Gateway
from gateway.store.ledger import SubjectErased
from schemas.api import BatchEnvelope, BatchIn, BatchOut, BatchResult, DecisionOut
from schemas.consent import Decision

MAX_WAIT_S = 60.0
Context = dict[str, Any]  # what a decision is validated against (Gateway.decision_context)
WAIT = re.compile(r"60(\.0{1,9})?|[1-5]?[0-9](\.[0-9]{1,9})?")  # 0 to MAX_WAIT_S, no leading zeros
WAIT_PARAM = Param(
    "wait",
    "query",
    {"type": "string", "pattern": f"^({WAIT.pattern})$"},
    "seconds to wait for every delivery to be final; 200 if they are, else 202",
)


class WaitQuery(QueryModel):
    wait: Annotated[PlainDecimal, Field(ge=0, le=MAX_WAIT_S)] = 0.0

    @field_validator("wait", mode="before")
    @classmethod
    def _as_documented(cls, value: Any) -> Any:
        """Exactly the document's pattern: ``060`` or ``00.5`` is not how the API says to write it."""
        if isinstance(value, str) and not WAIT.fullmatch(value):
            raise ValueError("must be seconds from 0 to 60, written like 10 or 2.5")
        return value


@requires("consents:write")
@documented(
    Operation(
        "Record one consent decision",
        DecisionOut,
        202,
        body=Decision,
        params=[WAIT_PARAM, KEY_PARAM],
        also=[200],
        links=decision_links("$response.body#"),
    )
)
async def create_consent(request: Request) -> Response:
    gateway = gateway_of(request)
    wait = query(request, WaitQuery).wait
    with counted_if_refused(gateway):
        require_json(request)
        raw = await read_body(request, gateway.settings.max_body_bytes, gateway.settings.body_timeout_s)
        decision = _decision(gateway.decision_context(), parse_json(raw), raw)

    async def produce(bind: Bind) -> tuple[int, bytes]:
        with counted_if_refused(gateway):
            await request.app.state.limits.spend_decisions(request.state.principal, 1)
        try:
            recorded = await gateway.record(decision, bind(0))
        except SubjectErased as refused:
            raise erased(str(refused)) from None
        if wait:
            recorded = await gateway.wait_until_final(recorded.id, wait)
        done = all(delivery.status.final for delivery in recorded.deliveries)
        return (200 if wait and done else 202), recorded.model_dump_json().encode()

    response = await idempotent(request, decision.model_dump_json, produce)
    response.headers["Location"] = f"/v1/consents/{orjson.loads(bytes(response.body))['id']}"
    return response


@requires("consents:write")
@documented(
    Operation(
        "Record up to 1,000 decisions, each accepted or rejected on its own",
        BatchOut,
        body=BatchEnvelope,
        params=[KEY_PARAM],
        links=decision_links("$response.body#/results/0/decision"),
        body_limit="max_batch_body_bytes",
    )
)
async def create_consents_batch(request: Request) -> Response:
    gateway = gateway_of(request)
    query(request, QueryModel)
    require_json(request)
    raw = await read_body(request, gateway.settings.max_batch_body_bytes, gateway.settings.body_timeout_s)
    parsed = parse_json(raw)
    if parsed.repeats:
        refuse_repeated_keys(parsed.value, deep=False)  # the envelope; each item is checked on its own
    try:
        items = BatchEnvelope.model_validate(parsed.value).decisions
    except ValidationError as error:
        raise invalid(error) from None
    checked = _batch_items(gateway.decision_context(), raw, items, parsed.repeats)

    async def produce(bind: Bind) -> tuple[int, bytes]:
        valid = [(index, item) for index, item in enumerate(checked) if isinstance(item, Decision)]
        gateway.metrics.decisions.labels("rejected").inc(len(checked) - len(valid))
        with counted_if_refused(gateway, len(valid)):
            await request.app.state.limits.spend_decisions(request.state.principal, len(valid))
        # handed over together, in input order: recorded in as few transactions as the group allows
        recorded = await gateway.record_all([(item, bind(index)) for index, item in valid])
        outcomes = dict(zip((index for index, _ in valid), recorded, strict=True))
        results = [
            item if isinstance(item, BatchResult) else _result(index, outcomes[index])
            for index, item in enumerate(checked)
        ]
        return 200, BatchOut(results=results).model_dump_json(exclude_none=True).encode()

    return await idempotent(request, lambda: json.dumps(items, sort_keys=True), produce)


@contextmanager
def counted_if_refused(gateway: Gateway, decisions: int = 1) -> Iterator[None]:
    """Decisions refused before they reach the gateway's record (not JSON, invalid, over the
    token's limit) count as rejected, as the ones it refuses itself (an erased subject) do."""
    try:
        yield
    except Refusal:
        gateway.metrics.decisions.labels("rejected").inc(decisions)
        raise


def _result(index: int, outcome: DecisionOut | BaseException) -> BatchResult:
    """An item recorded, or refused because its subject was erased; anything else is a fault."""
    if isinstance(outcome, SubjectErased):
        problem = erased(str(outcome), f"decisions.{index}.subject.id").problem
        return BatchResult(index=index, status="rejected", problem=problem)
    if isinstance(outcome, BaseException):
        raise outcome
    return BatchResult(index=index, status="accepted", decision=outcome)


def _batch_items(context: Context, raw: bytes, items: list[Any], repeats: bool) -> list[Decision | BatchResult]:
    """Each item as a decision or its rejection. The whole batch is validated in one pass first;
    only when something in it is wrong are the items gone through one by one to say which."""
    if not repeats:
        try:
            valid = BatchIn.model_validate_json(raw, context=context).decisions
            return list(valid)
        except ValidationError:
            pass
    return [_batch_item(context, index, item, repeats) for index, item in enumerate(items)]


def _batch_item(context: Context, index: int, item: Any, repeats: bool) -> Decision | BatchResult:
    """Every item is validated before any is recorded, so a bad one can't cut a batch in two."""
    try:
        parsed = Parsed(item, repeats)
        return _decision(context, parsed, json.dumps(item).encode(), prefix=f"decisions.{index}")
    except Refusal as rejected:
        return BatchResult(index=index, status="rejected", problem=rejected.problem)


def _decision(context: Context, parsed: Parsed, raw: bytes, prefix: str = "") -> Decision:
    if parsed.repeats:
        refuse_repeated_keys(parsed.value, prefix)
    try:
        return Decision.model_validate_json(raw, context=context)
    except ValidationError as error:
        raise invalid(error, prefix) from None


@requires("consents:read")
@documented(
    Operation(
        "One decision and the status of each provider delivery",
        DecisionOut,
        params=[path_param("decision_id", UUID_TEXT)],
        links=decision_links("$response.body#"),
    )
)
async def get_consent(request: Request) -> Response:
    found = await gateway_of(request).decision(path_id(request, "decision_id", UUID_TEXT, "decision"))
    return JSONResponse(found.model_dump(mode="json"))


routes = [
    Route("/v1/consents", create_consent, methods=["POST"]),
    Route("/v1/consents:batch", create_consents_batch, methods=["POST"]),
    Route("/v1/consents/{decision_id}", get_consent, methods=["GET"]),
]

"""``/v1/subjects``: a subject's merged state and where each provider stands."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth import requires
from gateway.openapi import Operation, Param, documented
from gateway.problems import ProblemError, bad_parameter
from schemas.api import HistoryOut, SubjectOut

MAX_HISTORY = 200


@requires("consents:read")
@documented(
    Operation(
        "Current state per purpose, and one row per provider",
        SubjectOut,
        params=[Param("subject_id", "path", {"type": "string"})],
    )
)
async def get_subject(request: Request) -> Response:
    found = await request.app.state.gateway.subject(request.path_params["subject_id"])
    if found is None:
        raise ProblemError(404, "not-found", "No such subject", "no decision has been recorded for it")
    return JSONResponse(found.model_dump(mode="json"))


@requires("consents:read")
@documented(
    Operation(
        "The subject's ledger, newest first",
        HistoryOut,
        params=[
            Param("subject_id", "path", {"type": "string"}),
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY}),
        ],
    )
)
async def get_history(request: Request) -> Response:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY:
        message = f"must be a whole number from 1 to {MAX_HISTORY}"
        raise bad_parameter("limit", message)
    items = await request.app.state.gateway.store.ledger.history(request.path_params["subject_id"], int(raw))
    if not items:
        raise ProblemError(404, "not-found", "No such subject", "no decision has been recorded for it")
    return JSONResponse(HistoryOut(items=items).model_dump(mode="json"))


routes = [
    Route("/v1/subjects/{subject_id}", get_subject, methods=["GET"]),
    Route("/v1/subjects/{subject_id}/history", get_history, methods=["GET"]),
]

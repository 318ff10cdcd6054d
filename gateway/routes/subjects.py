"""``/v1/subjects``: a subject's merged state and where each provider stands."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import requires
from gateway.openapi import Operation, Param, documented, path_param
from gateway.params import SUBJECT_ID, QueryModel, WholeNumber, path_id, query
from gateway.problems import ProblemError
from gateway.responses import JSONResponse
from gateway.routes.links import decision_links, subject_links
from schemas.api import HistoryOut, SubjectOut

MAX_HISTORY = 200


class HistoryQuery(QueryModel):
    limit: Annotated[WholeNumber, Field(ge=1, le=MAX_HISTORY)] = 50


@requires("consents:read")
@documented(
    Operation(
        "Current state per purpose, and one row per provider",
        SubjectOut,
        params=[path_param("subject_id", SUBJECT_ID)],
        links=subject_links("$response.body#/state/subject_id"),
    )
)
async def get_subject(request: Request) -> Response:
    found = await request.app.state.gateway.subject(path_id(request, "subject_id", SUBJECT_ID, "subject"))
    if found is None:
        raise ProblemError(404, "not-found", "No such subject", "no decision has been recorded for it")
    return JSONResponse(found.model_dump(mode="json"))


@requires("consents:read")
@documented(
    Operation(
        "The subject's ledger, newest first",
        HistoryOut,
        params=[
            path_param("subject_id", SUBJECT_ID),
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY}),
        ],
        links=decision_links("$response.body#/items/0"),
    )
)
async def get_history(request: Request) -> Response:
    limit = query(request, HistoryQuery).limit
    items = await request.app.state.gateway.store.ledger.history(
        path_id(request, "subject_id", SUBJECT_ID, "subject"), limit
    )
    if not items:
        raise ProblemError(404, "not-found", "No such subject", "no decision has been recorded for it")
    return JSONResponse(HistoryOut(items=items).model_dump(mode="json"))


routes = [
    Route("/v1/subjects/{subject_id}", get_subject, methods=["GET"]),
    Route("/v1/subjects/{subject_id}/history", get_history, methods=["GET"]),
]

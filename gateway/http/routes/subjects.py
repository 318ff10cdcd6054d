"""``/v1/subjects``: a subject's merged state and where each provider stands."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.auth import requires
from gateway.http.openapi import Operation, Param, documented, path_param
from gateway.http.params import SUBJECT_ID, UUID_TEXT, QueryModel, WholeNumber, path_id, query
from gateway.http.responses import JSONResponse
from gateway.http.routes.links import decision_links, erasure_links, subject_links
from gateway.http.state import gateway_of
from schemas.api import ErasureOut, HistoryOut, SubjectOut

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
    found = await gateway_of(request).shown_subject(path_id(request, "subject_id", SUBJECT_ID, "subject"))
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
    items = await gateway_of(request).history(path_id(request, "subject_id", SUBJECT_ID, "subject"), limit)
    return JSONResponse(HistoryOut(items=items).model_dump(mode="json"))


@requires("admin")
@documented(
    Operation(
        "Erase the person: removal at every provider, then their data out of the store",
        ErasureOut,
        202,
        params=[path_param("subject_id", SUBJECT_ID)],
        also=[200],
        links=erasure_links("$response.body#"),
    )
)
async def erase_subject(request: Request) -> Response:
    """202 with a new erasure; 200 with the subject's erasure when it was erased already."""
    gateway = gateway_of(request)
    subject_id = path_id(request, "subject_id", SUBJECT_ID, "subject")
    erasure, started = await gateway.erase(subject_id, f"token:{request.state.principal.name}")
    headers = {"Location": f"/v1/erasures/{erasure.id}"}
    return JSONResponse(erasure.model_dump(mode="json"), 202 if started else 200, headers)


@requires("admin")
@documented(
    Operation(
        "An erasure: its audit, and where each provider's removal stands",
        ErasureOut,
        params=[path_param("erasure_id", UUID_TEXT)],
        links=erasure_links("$response.body#"),
    )
)
async def get_erasure(request: Request) -> Response:
    found = await gateway_of(request).erasure(path_id(request, "erasure_id", UUID_TEXT, "erasure"))
    return JSONResponse(found.model_dump(mode="json"))


routes = [
    Route("/v1/subjects/{subject_id}", get_subject, methods=["GET"]),
    Route("/v1/subjects/{subject_id}", erase_subject, methods=["DELETE"]),
    Route("/v1/erasures/{erasure_id}", get_erasure, methods=["GET"]),
    Route("/v1/subjects/{subject_id}/history", get_history, methods=["GET"]),
]

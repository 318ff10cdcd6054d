"""``/v1/reconciliation``: where the providers' states diverge, read-back runs, and repairs (admins)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.auth import requires
from gateway.http.openapi import PAGE_PARAMS, Operation, Param, documented, path_param
from gateway.http.params import SUBJECT_ID, UUID_TEXT, PageQuery, body_model, page_query, path_id
from gateway.http.responses import JSONResponse
from gateway.http.routes.links import decision_links, run_links
from gateway.http.state import gateway_of
from gateway.reconcile.runner import decode_cursor
from gateway.refusals import not_found
from schemas.api import DecisionOut, ReconciliationPage, RepushIn, RunIn, RunOut, SyncStatus
from schemas.consent import SubjectId


class ReconciliationFilter(PageQuery):
    status: SyncStatus | None = None
    subject: SubjectId | None = None


FILTER_PARAMS = [
    Param("status", "query", {"enum": [s.value for s in SyncStatus]}),
    path_param("subject", SUBJECT_ID, "query", "one subject id"),
    *PAGE_PARAMS,
]
RUN_PARAM = [path_param("run_id", UUID_TEXT)]
SUBJECT_PARAM = path_param("subject_id", SUBJECT_ID)


@requires("admin")
@documented(
    Operation(
        "Drift rows, desired vs acknowledged vs observed, with counts per status",
        ReconciliationPage,
        params=FILTER_PARAMS,
    )
)
async def list_rows(request: Request) -> Response:
    gateway = gateway_of(request)
    filters = page_query(request, ReconciliationFilter, gateway.adapters, decode_cursor)
    page = await gateway.reconciler.view(
        provider=filters.provider,
        status=None if filters.status is None else {filters.status},
        subject=filters.subject,
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return JSONResponse(page.model_dump(mode="json"))


@requires("admin")
@documented(
    Operation(
        "Read the providers back now (a run); a worker carries it out. 200: the same run was queued already",
        RunOut,
        202,
        body=RunIn,
        body_optional=True,
        also=(200,),
        links=run_links("$response.body#"),
    )
)
async def start_run(request: Request) -> Response:
    gateway = gateway_of(request)
    wanted = await body_model(request, RunIn, gateway.settings.max_body_bytes, gateway.settings.body_timeout_s)
    run, created = await gateway.start_run(wanted.providers, wanted.subjects)
    status = 202 if created else 200  # 200: the same run was queued already, and is joined
    return JSONResponse(run.model_dump(mode="json"), status, {"Location": f"/v1/reconciliation/runs/{run.id}"})


@requires("admin")
@documented(Operation("A run's progress and counts", RunOut, params=RUN_PARAM, links=run_links("$response.body#")))
async def get_run(request: Request) -> Response:
    run = await gateway_of(request).store.runs.get(path_id(request, "run_id", UUID_TEXT, "run"))
    if run is None:
        raise not_found("run")
    return JSONResponse(run.model_dump(mode="json"))


@requires("admin")
@documented(
    Operation(
        "Push the subject to providers again now, whatever they acknowledged (a repair)",
        DecisionOut,
        202,
        body=RepushIn,
        body_optional=True,
        params=[SUBJECT_PARAM],
        links=decision_links("$response.body#"),
    )
)
async def repush(request: Request) -> Response:
    gateway = gateway_of(request)
    subject_id = path_id(request, "subject_id", SUBJECT_ID, "subject")
    wanted = await body_model(request, RepushIn, gateway.settings.max_body_bytes, gateway.settings.body_timeout_s)
    note = wanted.note or f"re-pushed by an admin to {', '.join(sorted(wanted.providers or gateway.adapters))}"
    entry = await gateway.repush(subject_id, wanted.providers, note)
    return JSONResponse(entry.model_dump(mode="json"), 202)


@requires("admin")
@documented(
    Operation(
        "Adopt what a provider was last read to hold as the person's decision now",
        DecisionOut,
        201,
        params=[SUBJECT_PARAM, Param("provider", "path", {"type": "string"})],
        links=decision_links("$response.body#"),
    )
)
async def adopt(request: Request) -> Response:
    gateway = gateway_of(request)
    subject_id = path_id(request, "subject_id", SUBJECT_ID, "subject")
    entry = await gateway.adopt(subject_id, str(request.path_params["provider"]))
    return JSONResponse(entry.model_dump(mode="json"), 201)


routes = [
    Route("/v1/reconciliation", list_rows, methods=["GET"]),
    Route("/v1/reconciliation/runs", start_run, methods=["POST"]),
    Route("/v1/reconciliation/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v1/subjects/{subject_id}/repush", repush, methods=["POST"]),
    Route("/v1/subjects/{subject_id}/providers/{provider}/adopt", adopt, methods=["POST"]),
]

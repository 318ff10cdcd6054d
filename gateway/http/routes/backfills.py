"""``/v1/providers/{provider}/backfills`` and ``/v1/backfills/{id}``: a provider sent every subject's
state again (admins); a worker drives the backfill."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.auth import requires
from gateway.http.openapi import Operation, Param, documented, path_param
from gateway.http.params import UUID_TEXT, body_model, path_id
from gateway.http.responses import JSONResponse
from gateway.http.routes.links import backfill_links
from gateway.http.state import gateway_of
from schemas.api import BackfillIn, BackfillOut, BackfillPreview


@requires("admin")
@documented(
    Operation(
        "Push every live subject's state to the provider again, as if it held nothing (a backfill); a worker "
        "carries it out, and the provider's unfinished backfill is joined. 200: a dry run's counts, nothing changed",
        BackfillOut,
        202,
        body=BackfillIn,
        body_optional=True,
        params=[Param("provider", "path", {"type": "string"})],
        other={200: BackfillPreview},
        links=backfill_links("$response.body#"),
    )
)
async def start_backfill(request: Request) -> Response:
    gateway = gateway_of(request)
    provider = str(request.path_params["provider"])
    wanted = await body_model(request, BackfillIn, gateway.settings.max_body_bytes, gateway.settings.body_timeout_s)
    if wanted.dry_run:
        return JSONResponse((await gateway.preview_backfill(provider)).model_dump(mode="json"))
    backfill, _created = await gateway.start_backfill(provider)
    gateway.worker.wake()
    return JSONResponse(backfill.model_dump(mode="json"), 202, {"Location": f"/v1/backfills/{backfill.id}"})


@requires("admin")
@documented(
    Operation(
        "A backfill's status, counts per outcome, and the subjects whose push failed with why",
        BackfillOut,
        params=[path_param("backfill_id", UUID_TEXT)],
        links=backfill_links("$response.body#"),
    )
)
async def get_backfill(request: Request) -> Response:
    gateway = gateway_of(request)
    backfill = await gateway.backfill(path_id(request, "backfill_id", UUID_TEXT, "backfill"))
    return JSONResponse(backfill.model_dump(mode="json"))


routes = [
    Route("/v1/providers/{provider}/backfills", start_backfill, methods=["POST"]),
    Route("/v1/backfills/{backfill_id}", get_backfill, methods=["GET"]),
]

"""``/v1/deliveries``: the outbox for admins — what was sent, what failed and why, replay."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.auth import requires
from gateway.http.openapi import PAGE_PARAMS, Operation, Param, documented, path_param
from gateway.http.params import UUID_TEXT, PageQuery, page_query, path_id
from gateway.http.responses import JSONResponse
from gateway.http.routes.links import delivery_links
from gateway.http.state import gateway_of
from gateway.store.outbox import decode_cursor
from schemas.api import DeliveryOut, DeliveryPage, DeliveryStatus
from schemas.consent import RFC3339_PATTERN, Timestamp


class DeliveryFilter(PageQuery):
    status: DeliveryStatus | None = None
    subject: str | None = None
    since: Timestamp | None = None


FILTER_PARAMS = [
    Param("status", "query", {"enum": [s.value for s in DeliveryStatus]}),
    Param("subject", "query", {"type": "string"}, "subject id"),
    Param(
        "since", "query", {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}, "created at or after"
    ),
    *PAGE_PARAMS,
]
ID_PARAM = [path_param("delivery_id", UUID_TEXT)]
LINKS = delivery_links("$response.body#")


@requires("admin")
@documented(
    Operation(
        "Deliveries, newest first, filtered and paginated",
        DeliveryPage,
        params=FILTER_PARAMS,
        links=delivery_links("$response.body#/items/0"),
    )
)
async def list_deliveries(request: Request) -> Response:
    gateway = gateway_of(request)
    filters = page_query(request, DeliveryFilter, gateway.adapters, decode_cursor)
    page = await gateway.store.outbox.list(
        provider=filters.provider,
        status=filters.status,
        subject_id=filters.subject,
        since=filters.since,
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return JSONResponse(DeliveryPage(items=page.items, next_cursor=page.next_cursor).model_dump(mode="json"))


@requires("admin")
@documented(
    Operation(
        "One delivery with every attempt (time, status, duration, error)", DeliveryOut, params=ID_PARAM, links=LINKS
    )
)
async def get_delivery(request: Request) -> Response:
    found = await gateway_of(request).delivery(path_id(request, "delivery_id", UUID_TEXT, "delivery"))
    return JSONResponse(found.model_dump(mode="json"))


@requires("admin")
@documented(
    Operation(
        "Re-send a dead delivery; the subject's newest state is sent", DeliveryOut, 202, params=ID_PARAM, links=LINKS
    )
)
async def replay_delivery(request: Request) -> Response:
    replayed = await gateway_of(request).replay(path_id(request, "delivery_id", UUID_TEXT, "delivery"))
    return JSONResponse(replayed.model_dump(mode="json"), 202)


@requires("admin")
@documented(
    Operation(
        "Try a pending or retrying delivery now instead of at its ladder step",
        DeliveryOut,
        202,
        params=ID_PARAM,
        links=LINKS,
    )
)
async def retry_delivery(request: Request) -> Response:
    retried = await gateway_of(request).retry(path_id(request, "delivery_id", UUID_TEXT, "delivery"))
    return JSONResponse(retried.model_dump(mode="json"), 202)


routes = [
    Route("/v1/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route("/v1/deliveries/{delivery_id}/replay", replay_delivery, methods=["POST"]),
    Route("/v1/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
]

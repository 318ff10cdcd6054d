"""``/v1/providers/{provider}/events``: what a provider announces (Wix webhooks) in, and for admins
what became of each event.

The provider cannot hold a bearer token: its request is its own by its signature, which the
provider's adapter verifies (``adapters.base.EventSource``); anything it cannot verify is a 401 and
nothing is stored. A verified event is stored before the 2xx and acted on after, by a worker.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.auth import requires
from gateway.http.openapi import Operation, Param, documented
from gateway.http.params import QueryModel, WholeNumber, query, read_body
from gateway.http.responses import JSONResponse
from gateway.http.state import gateway_of
from schemas.api import EventPage, EventsReceived

PROVIDER = [Param("provider", "path", {"type": "string"}, "a provider that sends events (wix)")]


class EventQuery(QueryModel):
    limit: Annotated[WholeNumber, Field(ge=1, le=200)] = 50


@documented(
    Operation(
        "A provider's webhook: verified by its signature (no bearer token), stored once per event id, acted on after",
        EventsReceived,
        params=PROVIDER,
        body_text="the provider's signed request body as it sends it (Wix: a JWT signed RS256 with the app's key)",
    )
)
async def receive_events(request: Request) -> Response:
    gateway = gateway_of(request)
    settings = gateway.settings
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    received = await gateway.receive_events(request.path_params["provider"], body, request.headers)
    return JSONResponse(received.model_dump(mode="json"))


@requires("admin")
@documented(
    Operation(
        "A provider's newest events and what became of each",
        EventPage,
        params=[*PROVIDER, Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200})],
    )
)
async def list_events(request: Request) -> Response:
    limit = query(request, EventQuery).limit
    items = await gateway_of(request).provider_events(request.path_params["provider"], limit)
    return JSONResponse(EventPage(items=items).model_dump(mode="json"))


routes = [
    Route("/v1/providers/{provider}/events", receive_events, methods=["POST"]),
    Route("/v1/providers/{provider}/events", list_events, methods=["GET"]),
]

"""Acme's simulator: what its documentation says, on the gateway's simulator machinery."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.simulators.common import Faults, Reject, Simulator, authorization


class _Acme:
    def __init__(self, faults: Faults | None) -> None:
        self.people: dict[str, dict[str, dict[str, Any]]] = {}
        self.sim = Simulator(
            faults=faults,
            error_body=lambda status, message: {"error": message},
            state=lambda: {"people": self.people},
            reset=self.people.clear,
            authenticate=self.authenticate,
        )

    def authenticate(self, request: Request) -> None:
        auth = authorization(request)
        if auth is None or auth[0] != "bearer" or not auth[1]:
            raise Reject(401, {"error": "a bearer token is required"})
        if not request.headers.get("acme-account"):
            raise Reject(400, {"error": "the acme-account header is required"})
        self.sim.remember_secret(auth[1])

    async def put(self, request: Request, body: Any) -> Response:
        channels = body.get("channels") if isinstance(body, dict) else None
        if not isinstance(channels, dict) or set(body) != {"channels"}:
            raise Reject(422, {"error": 'the body is {"channels": {name: {subscribed, updated_at}}}'})
        for name, channel in channels.items():
            if not isinstance(channel, dict) or not isinstance(channel.get("subscribed"), bool):
                raise Reject(422, {"error": f"channels.{name}.subscribed must be a boolean"})
            try:
                datetime.fromisoformat(channel["updated_at"])
            except (KeyError, TypeError, ValueError):
                raise Reject(422, {"error": f"channels.{name}.updated_at must be an ISO 8601 time"}) from None
        person = self.people.setdefault(request.path_params["person"], {})
        person.update(
            {name: {"subscribed": c["subscribed"], "updated_at": c["updated_at"]} for name, c in channels.items()}
        )
        return JSONResponse({"channels": person})

    async def get(self, request: Request, body: Any) -> Response:
        person = self.people.get(request.path_params["person"])
        if person is None:
            raise Reject(404, {"error": "no such person"})
        return JSONResponse({"channels": person})


def create_app(faults: Faults | None = None, *, clock: Callable[[], float] = time.time) -> Starlette:
    acme = _Acme(faults)
    sim = acme.sim
    path = "/v1/people/{person}/consent"
    return sim.build([sim.route(path, acme.put, ["PUT"]), sim.route(path, acme.get, ["GET"])])

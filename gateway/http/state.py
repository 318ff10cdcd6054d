"""The gateway a request is served by, typed: routes reach it only through ``gateway_of``."""

from __future__ import annotations

from starlette.requests import Request

from gateway.service import Gateway


def gateway_of(request: Request) -> Gateway:
    gateway = request.app.state.gateway
    assert isinstance(gateway, Gateway), "create_app puts the gateway on app.state"
    return gateway

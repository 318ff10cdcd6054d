"""Security headers on every answer the API gives, set once here rather than per route."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULTS = {
    "x-content-type-options": "nosniff",  # a JSON body is never sniffed into something a browser runs
    "cache-control": "no-store",  # consent state and contact data stay out of shared caches
    "referrer-policy": "no-referrer",
}


class SecurityHeaders:
    """Adds ``DEFAULTS`` to every HTTP response, keeping any a route set itself (the admin page's
    stylesheet may be cached). Pure ASGI: no per-request task or body buffering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULTS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

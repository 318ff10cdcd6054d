"""The framework ceiling: a bare Starlette endpoint that parses the decision's JSON and answers 202,
served exactly as ``consent-gateway serve`` serves the gateway (same uvicorn settings, same
logging), so ``ingest.ratio`` measures what the gateway's own work costs and nothing else.

    python -m benchmarks.ceiling --port 8100
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http.server import serve as serve_app
from gateway.redaction import configure_logging


async def accept(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"subject": body["subject"]["id"], "status": "accepted"}, status_code=202)


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/v1/consents", accept, methods=["POST"]), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    configure_logging()  # what `serve` does before uvicorn starts: access lines cost the same here
    serve_app(app, args.host, args.port)


if __name__ == "__main__":
    main()

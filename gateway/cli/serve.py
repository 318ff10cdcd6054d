"""``serve``, ``worker`` and ``simulate``: the long-running processes."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from adapters.registry import simulators_app
from adapters.simulators.common import LOG_LIMIT
from gateway.cli.common import ConfigOption, HostOption, PortOption, app, console, fail, gateway, registered, settings
from gateway.demo import demo_app, demo_token
from gateway.http.app import create_app, create_worker_app
from gateway.http.server import collect_less
from gateway.http.server import serve as serve_app
from gateway.redaction import configure_logging

TOKEN_FROM_ENV = "API token: the one in $CONSENT_GATEWAY_TOKEN (not printed)"


@app.command()
def serve(
    config: ConfigOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    demo: Annotated[bool, typer.Option(help="SQLite + in-process provider simulators + a demo token")] = False,
    with_worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="run the delivery worker in this process too")
    ] = True,
) -> None:
    """Run the API (and, unless --no-worker, the delivery worker)."""
    if demo:
        host = "127.0.0.1"  # the demo's token may be printed: never expose it beyond loopback
        names = ",".join(registered())
        token, generated = demo_token()
        served = demo_app(host, port, token)
        console.print(f"[bold]demo[/]: simulators at http://{host}:{port}/simulators/{{{names}}}")
        console.print(
            f"admin page http://{host}:{port}/admin/ (sign in with the token); API docs http://{host}:{port}/docs"
        )
        console.print(f"API token (shown once): [green]{token}[/]" if generated else TOKEN_FROM_ENV)
    else:
        served = create_app(gateway(settings(config), api=True), run_worker=None if with_worker else False)
    serve_app(served, host, port, served.state.gateway.settings.header_timeout_s)


@app.command()
def worker(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address for /metrics and /healthz [worker.http_host]")] = None,
    port: Annotated[
        int | None, typer.Option(help="port for /metrics and /healthz, 0 for none [worker.http_port]")
    ] = None,
) -> None:
    """Run the delivery worker alone, serving /metrics, /healthz and /readyz on its own port
    (none if it is 0); SIGTERM lets in-flight deliveries finish."""
    configured = settings(config)
    built = gateway(configured, api=False)
    bind_port = port if port is not None else configured.worker.http_port
    if bind_port:
        serve_app(create_worker_app(built), host or configured.worker.http_host, bind_port)
        return
    collect_less()  # as serve_app does: the collector's full passes held the loop ~60 ms each

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await built.start(run_worker=True)
        await stop.wait()
        await built.stop()

    asyncio.run(run())


@app.command()
def simulate(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8010,
    log_limit: Annotated[int, typer.Option(min=1, help="requests each simulator keeps for /_inspect")] = LOG_LIMIT,
    events_url: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PROVIDER=URL",
            help="send PROVIDER's webhooks to URL, signed with its test key (a simulator that sends events: wix)",
        ),
    ] = None,
) -> None:
    """Run every provider's simulator on one port, at /<provider> (/masivo, /wix, /intempt). Logs are the
    gateway's JSON lines, scrubbed the same way (Intempt's apiKey and Wix's get-by email travel
    in query strings)."""
    known = registered()
    options: dict[str, dict[str, str]] = {}
    for value in events_url or []:
        name, _, url = value.partition("=")
        if name not in known or not url.startswith(("http://", "https://")):
            fail(f"--events-url {value!r}: expected PROVIDER=URL with one of {', '.join(known)} and an http(s) URL", 2)
        options[name] = {"events_url": url}
    try:
        simulators = simulators_app(log_limit=log_limit, options=options)
    except TypeError as error:  # a simulator without events_url
        fail(f"--events-url: a simulator does not send events ({error})", 2)
    configure_logging()
    serve_app(simulators, host, port)

"""Provider simulators: Starlette apps that behave like Masivo, Wix and Intempt's documented APIs.

They are the test oracle, so they read the provider docs on their own and import nothing from `schemas/`
or the adapters. Control routes (`/_inspect`, `/_faults`, `/_reset`) are described in `common`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import Mount

from adapters.simulators import intempt, masivo, wix
from adapters.simulators.common import LOG_LIMIT, Faults

__all__ = ["SIMULATORS", "Faults", "create_all"]

SIMULATORS: dict[str, Callable[..., Starlette]] = {
    "masivo": masivo.create_app,
    "wix": wix.create_app,
    "intempt": intempt.create_app,
}


def create_all(faults: Faults | None = None, *, log_limit: int = LOG_LIMIT) -> Starlette:
    """All three simulators on one app, at /masivo, /wix and /intempt (e.g. `GET /wix/_inspect`),
    each keeping its last ``log_limit`` requests."""
    apps = {name: factory(faults) for name, factory in SIMULATORS.items()}
    for app in apps.values():
        app.state.simulator.keep(log_limit)
    return Starlette(routes=[Mount(f"/{name}", app=app) for name, app in apps.items()])

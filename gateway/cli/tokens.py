"""``token``: mint API tokens; the config keeps only their SHA-256 digest."""

from __future__ import annotations

import json
import secrets
from enum import StrEnum
from typing import Annotated

import typer
from pydantic import ValidationError

from gateway.cli.common import fail
from gateway.config import SCOPES, ApiToken
from gateway.http.auth import hash_token

app = typer.Typer(help="API tokens.", no_args_is_help=True)
Scope = StrEnum("Scope", {scope: scope for scope in SCOPES})  # type: ignore[misc]  # typer's choices


@app.command("new")
def new(
    name: Annotated[str, typer.Option(help="who holds it: shown in 403/429 problems and the admin page")],
    scope: Annotated[list[Scope], typer.Option(help="repeat for several; admin includes the others")],
    requests_per_minute: Annotated[
        float | None, typer.Option(min=0, help="this token's request limit (default: token_requests_per_minute)")
    ] = None,
) -> None:
    """Print a new random token once, and the \\[[tokens]] block (its digest, never the token) to
    add to the config. Nothing is stored: lose the token and mint another."""
    token = secrets.token_urlsafe(32)
    try:
        minted = ApiToken(
            name=name,
            sha256=hash_token(token),
            scopes=[s.value for s in scope],
            requests_per_minute=requests_per_minute,
        )
    except ValidationError as error:
        fail(f"token: {error.errors(include_input=False)[0]['msg']}", 2)
    print(f"token (shown once; give it to {minted.name} and keep it in a secret store):\n{token}\n")
    print("add to the config file:\n")
    print(block(minted))


def block(token: ApiToken) -> str:
    """The TOML for ``token`` (JSON strings are valid TOML basic strings)."""
    lines = ["[[tokens]]", f"name = {json.dumps(token.name)}", f'sha256 = "{token.sha256}"']
    lines.append(f"scopes = {json.dumps(sorted(set(token.scopes)))}")
    if token.requests_per_minute is not None:
        lines.append(f"requests_per_minute = {token.requests_per_minute:g}")
    return "\n".join(lines)

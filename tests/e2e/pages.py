"""The admin page as a browser without JavaScript uses it: the session's CSRF token, and signing in."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def csrf(client: httpx.AsyncClient, path: str) -> str:
    """The CSRF token the page at ``path`` carries in its forms."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    [token] = set(CSRF.findall(page.text))
    return token


async def sign_in(client: httpx.AsyncClient, token: str) -> str:
    """Signs in with an API token holding the admin scope; the session cookie as it stands now."""
    form = {"token": token, "csrf": await csrf(client, "/admin/login")}
    assert (await client.post("/admin/login", data=form)).status_code == 303
    return client.cookies["consent_gateway_admin"]

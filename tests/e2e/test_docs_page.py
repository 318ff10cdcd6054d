"""``GET /docs``: the OpenAPI document as a page for people, whole and offline (nothing fetched
from elsewhere, no script)."""

from __future__ import annotations

import re

import httpx


async def test_the_docs_page_shows_every_operation_and_schema_and_fetches_nothing(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for path, item in document["paths"].items():
        for method in item:
            assert f'id="{item[method]["operationId"]}"' in html, (method, path)
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in html, name
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "everything it needs is in the page"
    assert "Record one consent decision" in html and "Idempotency-Key" in html

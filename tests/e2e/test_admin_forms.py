"""The admin page in-process (no browser): each form needs the session's CSRF token, what a caller
wrote is escaped, and no page may be framed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gateway.config import ApiToken, Settings
from gateway.http.app import create_app
from gateway.http.auth import hash_token
from gateway.service import Gateway
from gateway.store import Store
from schemas.api import DeliveryOut, DeliveryStatus
from schemas.consent import Decision
from tests.e2e.pages import csrf, sign_in
from tests.fakes import fake_adapter
from tests.world import Sleeps

ADMIN = "admin-page-token-abcdefgh"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"


class Admin:
    """A browser's view of /admin: its cookie jar, and the gateway behind it."""

    def __init__(self, client: httpx.AsyncClient, gateway: Gateway) -> None:
        self.client = client
        self.gateway = gateway

    async def csrf(self, path: str) -> str:
        return await csrf(self.client, path)

    async def sign_in(self) -> None:
        await sign_in(self.client, ADMIN)

    async def retrying(self) -> DeliveryOut:
        """A decision whose delivery failed once and now waits ten minutes for its retry."""
        decision = Decision.model_validate(
            {
                "subject": {"id": "cust-1"},
                "purposes": {"email_marketing": "granted"},
                "occurred_at": NOW - timedelta(hours=1),
                "note": f"signup {SCRIPT}",
            },
            strict=False,
        )
        await self.gateway.record(decision)
        await self.gateway.worker.drain()
        [found] = (await self.gateway.store.outbox.list(provider="fake")).items
        assert found.status is DeliveryStatus.retrying and found.next_attempt_at is not None, found
        assert found.next_attempt_at > NOW
        return found

    async def due(self, delivery: DeliveryOut) -> datetime | None:
        found = await self.gateway.store.outbox.get(delivery.id)
        assert found is not None
        return found.next_attempt_at


@pytest.fixture
async def admin(store: Store) -> AsyncIterator[Admin]:
    settings = Settings(
        tokens=[ApiToken(name="ops", sha256=hash_token(ADMIN), scopes=["admin"])],
        retry={"attempts": 1, "ladder_s": [600, 3600]},
    )
    gateway = Gateway(
        settings,
        store=store,
        adapters={"fake": fake_adapter()},
        transports={"fake": httpx.MockTransport(lambda request: httpx.Response(503, json={}))},
        clock=lambda: NOW,
        sleep=Sleeps(),
    )
    transport = httpx.ASGITransport(app=create_app(gateway))  # no lifespan: the test drives the worker
    async with httpx.AsyncClient(transport=transport, base_url="https://gateway") as client:
        yield Admin(client, gateway)
    await gateway.worker.stop()


@pytest.mark.parametrize(
    "csrf", [None, "", "forged-token-0123456789"], ids=["no-token", "empty-token", "another-token"]
)
async def test_the_retry_form_without_the_sessions_csrf_token_is_refused(admin: Admin, csrf: str | None) -> None:
    await admin.sign_in()
    delivery = await admin.retrying()
    form = {"subject": "cust-1"} | ({} if csrf is None else {"csrf": csrf})
    refused = await admin.client.post(f"/admin/deliveries/{delivery.id}/retry", data=form)
    assert refused.status_code == 403
    assert await admin.due(delivery) == delivery.next_attempt_at, "the delivery still waits for its step"


async def test_the_retry_form_with_the_sessions_csrf_token_makes_the_delivery_due_now(admin: Admin) -> None:
    await admin.sign_in()
    delivery = await admin.retrying()
    form = {"subject": "cust-1", "csrf": await admin.csrf("/admin/subjects/cust-1")}
    answer = await admin.client.post(f"/admin/deliveries/{delivery.id}/retry", data=form)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/subjects/cust-1"
    assert await admin.due(delivery) == NOW


async def test_the_retry_form_needs_a_signed_in_admin(admin: Admin) -> None:
    delivery = await admin.retrying()
    form = {"subject": "cust-1", "csrf": await admin.csrf("/admin/login")}
    refused = await admin.client.post(f"/admin/deliveries/{delivery.id}/retry", data=form)
    assert refused.status_code == 403 and await admin.due(delivery) == delivery.next_attempt_at


async def test_what_a_caller_wrote_is_escaped_on_the_page(admin: Admin) -> None:
    await admin.sign_in()
    await admin.retrying()
    page = await admin.client.get("/admin/subjects/cust-1")
    assert page.status_code == 200 and 'data-action="retry-fake"' in page.text
    assert SCRIPT not in page.text
    assert "signup &lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize("path", ["/admin/login", "/admin/", "/admin/subjects/cust-1", "/admin/subjects/nobody"])
async def test_no_admin_page_may_be_framed(admin: Admin, path: str) -> None:
    await admin.sign_in()
    await admin.retrying()
    page = await admin.client.get(path)
    assert page.status_code in (200, 404) and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_a_refused_form_may_not_be_framed_either(admin: Admin) -> None:
    refused = await admin.client.post("/admin/logout", data={})
    assert refused.status_code == 403 and refused.headers["x-frame-options"] == "DENY"

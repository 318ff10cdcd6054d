"""Signed webhooks from the Wix simulator: Marketing Consent Created / Updated / Deleted, as Wix sends them.

The request body is a JWT (RS256, signed with the app's private key; the receiver verifies it with the app's
public key), sent raw as ``text/plain``. Its claims are ``{"data": <WebhookData as JSON>, "iat", "exp"}``;
WebhookData is ``{eventType, instanceId, data: <ConsentEvent as JSON>, identity: <JSON>}``, and the
ConsentEvent carries the consent as GET returns it, once more as a JSON string (``createdEvent.entityAsJson``,
``updatedEvent.currentEntityAsJson``, ``deletedEvent.deletedEntityAsJson``).

Delivery runs in background tasks, so the simulator's own answer never waits for it. A send that fails
(non-2xx or a connection error) is redelivered on a ladder, re-signed each time with a fresh ``iat``/``exp``
but the same event id, as Wix redelivers. ``duplicates`` sends extra copies of every event, ``reorder``
sends each burst (the events queued while the sender waits ``delay_s``) newest first: the receiver's
de-duplication and ordering can be tested against both.

``TEST_PRIVATE_KEY`` / ``TEST_PUBLIC_KEY`` are a PUBLIC TEST KEY PAIR shipped in this package
(``wix_webhook_test_key.pem``, ``wix_webhook_test_key_public.pem``): anyone can sign with it, so it is for
the simulator and tests only, never for a real Wix app.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import httpx
import jwt

__all__ = [
    "ENTITY_FQDN",
    "EVENT_CREATED",
    "EVENT_DELETED",
    "EVENT_TYPES",
    "EVENT_UPDATED",
    "REDELIVERY",
    "TEST_PRIVATE_KEY",
    "TEST_PUBLIC_KEY",
    "Sender",
    "Webhooks",
]

EVENT_CREATED: Final = "wix.marketing.v1.marketing_consent_created"
EVENT_UPDATED: Final = "wix.marketing.v1.marketing_consent_updated"
EVENT_DELETED: Final = "wix.marketing.v1.marketing_consent_deleted"
EVENT_TYPES: Final = {"created": EVENT_CREATED, "updated": EVENT_UPDATED, "deleted": EVENT_DELETED}
ENTITY_FQDN: Final = "wix.marketing.marketing_consent.v1.marketing_consent"
REDELIVERY: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before each redelivery of a failed send; the event is dropped after the last one fails."""
IDENTITY: Final = json.dumps({"identityType": "APP"})  # the calls come with the app's credentials
RECENT = 100  # deliveries kept for /_inspect


def _pem(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="ascii")


TEST_PRIVATE_KEY: Final = _pem("wix_webhook_test_key.pem")
TEST_PUBLIC_KEY: Final = _pem("wix_webhook_test_key_public.pem")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Webhooks:
    """Where and how the Wix simulator sends its events."""

    url: str
    instance_id: str = "demo-site"  # the site (app instance) the receiver expects
    private_key: str = field(default=TEST_PRIVATE_KEY, repr=False)
    delay_s: float = 0  # each burst waits this long before it is sent
    duplicates: int = 0  # extra copies of every event
    reorder: bool = False  # send each burst newest first
    ttl_s: int = 300  # exp = iat + ttl_s
    redelivery: tuple[float, ...] = REDELIVERY
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)  # e.g. ASGITransport in tests
    clock: Callable[[], float] | None = None  # iat/exp; None: the simulator's own clock
    sleep: Sleep = asyncio.sleep  # delays and the redelivery ladder
    timeout_s: float = 10

    def __post_init__(self) -> None:
        if self.duplicates < 0 or self.delay_s < 0 or self.ttl_s <= 0 or any(wait < 0 for wait in self.redelivery):
            raise ValueError("duplicates, delay_s and redelivery waits must not be negative, ttl_s must be positive")


def _change(slug: str, entity_json: str) -> dict[str, Any]:
    """The event's slug-specific part, which carries the entity."""
    if slug == "created":
        return {"createdEvent": {"entityAsJson": entity_json}}
    if slug == "updated":
        return {"updatedEvent": {"currentEntityAsJson": entity_json}}
    return {"deletedEvent": {"movedToTrash": False, "deletedEntityAsJson": entity_json}}


@dataclass
class _Delivery:
    """One copy of one event on its way; every attempt at it is signed afresh."""

    event_type: str
    event: dict[str, Any]
    attempts: int = 0
    status: str = "pending"  # pending | sent | dropped

    def summary(self) -> dict[str, Any]:
        """What /_inspect shows: no JWT, no entity (it holds contact data)."""
        return {
            "id": self.event["id"],
            "eventType": self.event_type,
            "entityId": self.event["entityId"],
            "attempts": self.attempts,
            "status": self.status,
        }


class Sender:
    """Queues the simulator's events and delivers them in background tasks."""

    def __init__(self, settings: Webhooks, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = settings.clock or clock
        self._queue: list[_Delivery] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = 0
        self.recent: deque[_Delivery] = deque(maxlen=RECENT)
        self.reset()

    def reset(self) -> None:
        """Forget the counters and recent deliveries (deliveries under way go on)."""
        self.sent = self.failed = self.dropped = 0
        self.last_error: str | None = None
        self.recent.clear()

    def emit(self, slug: str, entity: dict[str, Any], event_time: str, *, anonymized: bool = False) -> None:
        """Queue one event about ``entity`` (the consent after the change; before it, for a deletion)."""
        event = {
            "id": str(uuid.uuid4()),
            "entityFqdn": ENTITY_FQDN,
            "slug": slug,
            "entityId": entity["id"],
            "eventTime": event_time,
            "triggeredByAnonymizeRequest": anonymized,
            **_change(slug, json.dumps(entity)),
        }
        for _ in range(1 + self.settings.duplicates):
            delivery = _Delivery(EVENT_TYPES[slug], event)
            self._queue.append(delivery)
            self.recent.append(delivery)
            self._open += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush())

    async def idle(self) -> None:
        """Wait until nothing is queued or in flight (tests); a task's error is raised here."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    def view(self) -> dict[str, Any]:
        return {
            "instanceId": self.settings.instance_id,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": self._open,
            "lastError": self.last_error,
            "recent": [delivery.summary() for delivery in self.recent],
        }

    # --- delivery ------------------------------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _flush(self) -> None:
        """Send what is queued, burst by burst; a failed send goes on to its own redelivery task."""
        while self._queue:
            await self.settings.sleep(self.settings.delay_s)
            burst, self._queue = self._queue, []
            for delivery in reversed(burst) if self.settings.reorder else burst:
                if not await self._attempt(delivery):
                    self._spawn(self._redeliver(delivery))

    async def _redeliver(self, delivery: _Delivery) -> None:
        for wait in self.settings.redelivery:
            await self.settings.sleep(wait)
            if await self._attempt(delivery):
                return
        delivery.status = "dropped"
        self.dropped += 1
        self._open -= 1

    async def _attempt(self, delivery: _Delivery) -> bool:
        delivery.attempts += 1
        settings = self.settings
        try:
            async with httpx.AsyncClient(transport=settings.transport, timeout=settings.timeout_s) as client:
                response = await client.post(
                    settings.url, content=self._sign(delivery), headers={"content-type": "text/plain"}
                )
        except httpx.HTTPError as error:
            self.last_error = type(error).__name__
        else:
            if response.is_success:
                delivery.status = "sent"
                self.sent += 1
                self._open -= 1
                return True
            self.last_error = f"HTTP {response.status_code}"
        self.failed += 1
        return False

    def _sign(self, delivery: _Delivery) -> bytes:
        data = {
            "eventType": delivery.event_type,
            "instanceId": self.settings.instance_id,
            "data": json.dumps(delivery.event),
            "identity": IDENTITY,
        }
        now = int(self.clock())
        claims = {"data": json.dumps(data), "iat": now, "exp": now + self.settings.ttl_s}
        return jwt.encode(claims, self.settings.private_key, algorithm="RS256").encode("ascii")

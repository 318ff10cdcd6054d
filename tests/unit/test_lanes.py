"""A provider's lane keeps its requests in flight: it claims ahead of its pushes, claims again as they end,
lets the next push start while an outcome is being recorded, and spreads its connections over clients
small enough that no request waits in one pool while another has a free connection.

The waits below are bounded polls of what the test can see (a request arriving, a row's status): a
worker that stops keeping its lane full makes them run out, and the test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.config import Settings
from gateway.delivery.worker import Lane, client_sizes
from gateway.service import Gateway
from gateway.store import Store
from gateway.store.outbox import Claim
from gateway.store.tables import deliveries
from schemas.api import DeliveryStatus
from schemas.consent import Decision
from tests.fakes import FakeAdapter, FakeSettings, fake_adapter
from tests.world import Sleeps

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Held:
    """A provider that answers each request only when the test lets it."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Event] = []
        self.answered = 0
        self.open = False  # answering everything at once (the test is over)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        go = asyncio.Event()
        self.waiting.append(go)
        if self.open:
            go.set()
        await go.wait()
        self.answered += 1
        return httpx.Response(200, json={})

    def release_all(self) -> None:
        self.open = True
        self.release(len(self.waiting))

    def release(self, count: int) -> None:
        for go in [go for go in self.waiting if not go.is_set()][:count]:
            go.set()

    @property
    def in_flight(self) -> int:
        return sum(not go.is_set() for go in self.waiting)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(1000):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def count(store: Store, status: DeliveryStatus) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).select_from(deliveries).where(deliveries.c.status == status.value)
        return int((await conn.execute(query)).scalar_one())


Make = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def provider() -> Held:
    return Held()


@pytest.fixture
async def make(store: Store, provider: Held) -> AsyncIterator[Make]:
    """A gateway with one fake provider (``provider``) at ``concurrency``, ``subjects`` decisions recorded;
    its worker never polls (only a wake makes it claim)."""
    made: list[Gateway] = []

    async def gateway(concurrency: int, subjects: int = 12) -> Gateway:
        transport = httpx.MockTransport(provider)
        built = Gateway(
            Settings(worker={"poll_interval_s": 3600}),
            store=store,
            adapters={"fake": fake_adapter(concurrency=concurrency, timeout_s=3600)},
            transports={"fake": transport},
            clock=lambda: NOW,
            sleep=Sleeps(),
        )
        made.append(built)
        for n in range(subjects):
            body = {"subject": {"id": f"cust-{n:02}"}, "purposes": {"email_marketing": "granted"}}
            body["occurred_at"] = NOW - timedelta(hours=1)
            await built.record(Decision.model_validate(body, strict=False))
        return built

    yield gateway
    provider.release_all()
    for built in made:
        await built.worker.stop()


async def test_a_lane_claims_three_times_its_concurrency_and_pushes_no_more_than_it_at_once(
    make: Make, provider: Held, store: Store
) -> None:
    gateway = await make(3, subjects=15)
    gateway.worker.start()
    await until(lambda: _true(provider.in_flight == 3), "three requests in flight")
    for _ in range(50):  # every chance to send a fourth
        await asyncio.sleep(0)
    assert provider.in_flight == 3
    assert await count(store, DeliveryStatus.sending) == 9, "six more claimed, waiting their turn"
    provider.release(100)
    await until(lambda: _true(provider.answered == 3), "the first three answered")
    await until(lambda: _true(provider.in_flight == 3), "the claimed ones pushed next")
    provider.release_all()
    await until(lambda: _is(count(store, DeliveryStatus.succeeded), 15), "every delivery made")


async def test_a_lane_claims_again_once_its_concurrency_is_free(make: Make, provider: Held, store: Store) -> None:
    """Concurrency 4: 12 claimed. Four ending leave room for a group of four, claimed at once, while the
    eight others of the first group are still under way (no poll: the worker's is an hour)."""
    gateway = await make(4, subjects=20)
    gateway.worker.start()
    await until(lambda: _true(provider.in_flight == 4), "four requests in flight")
    assert await count(store, DeliveryStatus.sending) == 12
    provider.release(3)
    await until(lambda: _is(count(store, DeliveryStatus.succeeded), 3), "three deliveries made")
    assert await count(store, DeliveryStatus.sending) == 9, "room for three is not room for a group"
    provider.release(1)
    await until(lambda: _is(count(store, DeliveryStatus.sending), 12), "four more claimed")
    assert await count(store, DeliveryStatus.succeeded) == 4


async def test_the_next_push_starts_while_an_outcome_is_being_recorded(
    make: Make, provider: Held, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await make(1, subjects=2)
    recording, go = asyncio.Event(), asyncio.Event()
    finish_many = gateway.store.outbox.finish_many

    async def slow(*args: object, **kwargs: object) -> list[bool]:
        recording.set()
        await go.wait()
        return await finish_many(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway.store.outbox, "finish_many", slow)
    gateway.worker.start()
    try:
        await until(lambda: _true(provider.in_flight == 1), "the first push sent")
        provider.release(1)
        await until(lambda: _true(recording.is_set()), "its outcome being recorded")
        await until(lambda: _true(provider.in_flight == 1), "the second push sent meanwhile")
    finally:
        go.set()
    provider.release_all()
    await until(lambda: _is(count(store, DeliveryStatus.succeeded), 2), "both delivered")


class Other(FakeAdapter):
    name = "other"


async def test_a_group_ending_claims_again_for_its_own_lane_only(
    store: Store, provider: Held, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a group's outcomes make due is of its own pairs: the other lanes are not claimed for (at
    concurrency 4, those empty claims were half of all claims, each a write transaction)."""
    answered = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    gateway = Gateway(
        Settings(worker={"poll_interval_s": 3600}),
        store=store,
        adapters={"fake": fake_adapter(timeout_s=3600), "other": Other(FakeSettings(timeout_s=3600))},
        transports={"fake": httpx.MockTransport(provider), "other": answered},
        clock=lambda: NOW,
        sleep=Sleeps(),
    )
    body = {"subject": {"id": "cust-1"}, "purposes": {"email_marketing": "granted"}, "occurred_at": NOW}
    await gateway.record(Decision.model_validate(body, strict=False))
    claimed: list[str] = []
    claim = gateway.store.outbox.claim

    async def spied(provider_name: str, *args: Any, **kwargs: Any) -> list[Claim]:
        claimed.append(provider_name)
        return await claim(provider_name, *args, **kwargs)

    monkeypatch.setattr(gateway.store.outbox, "claim", spied)
    gateway.worker.start()
    try:
        await until(lambda: _is(count(store, DeliveryStatus.succeeded), 1), "the other provider's delivery made")
        await until(lambda: _true(provider.in_flight == 1), "the fake provider's push sent")
        claimed.clear()
        provider.release(1)
        await until(lambda: _is(count(store, DeliveryStatus.succeeded), 2), "the fake provider's delivery made")
        await until(lambda: _true("fake" in claimed), "its lane claimed again")
        for _ in range(50):  # every chance to claim for the other lane
            await asyncio.sleep(0)
        assert claimed == ["fake"]
    finally:
        provider.release_all()
        await gateway.worker.stop()


async def test_an_outcome_waits_for_others_only_while_pushes_are_under_way(store: Store) -> None:
    """The outcome that ends while another provider's push is in flight waits ``outcome_gather_s`` for it
    (one transaction for both); the last one, with nothing under way, is written at once."""
    fake, other = Held(), Held()
    gateway = Gateway(
        Settings(worker={"poll_interval_s": 3600, "outcome_gather_s": 0.25}),
        store=store,
        adapters={"fake": fake_adapter(timeout_s=3600), "other": Other(FakeSettings(timeout_s=3600))},
        transports={"fake": httpx.MockTransport(fake), "other": httpx.MockTransport(other)},
        clock=lambda: NOW,
        sleep=Sleeps(),
    )
    waits: list[float] = []

    async def gathering(seconds: float) -> None:
        waits.append(seconds)

    gateway.worker.outcomes.sleep = gathering
    body = {"subject": {"id": "cust-1"}, "purposes": {"email_marketing": "granted"}, "occurred_at": NOW}
    await gateway.record(Decision.model_validate(body, strict=False))
    gateway.worker.start()
    try:
        await until(lambda: _true(fake.in_flight == other.in_flight == 1), "both pushes sent")
        other.release(1)
        await until(lambda: _is(count(store, DeliveryStatus.succeeded), 1), "the other provider's delivery made")
        assert waits == [0.25], "its outcome waited while the fake provider's push was under way"
        fake.release(1)
        await until(lambda: _is(count(store, DeliveryStatus.succeeded), 2), "the fake provider's delivery made")
        assert waits == [0.25], "the last outcome did not wait"
    finally:
        fake.release_all()
        other.release_all()
        await gateway.worker.stop()


def test_a_lanes_connections_are_split_into_clients_of_at_most_eight() -> None:
    assert client_sizes(4) == [4]
    assert client_sizes(8) == [8]
    assert client_sizes(9) == [5, 4]
    assert client_sizes(32) == [8, 8, 8, 8]
    assert client_sizes(20) == [7, 7, 6]


async def test_every_request_of_a_full_lane_goes_at_once_over_its_own_connection() -> None:
    """A real server that answers nothing until 20 requests are in: a lane of 20 (three clients) gets them
    all there at once, one connection each; a request left waiting in a pool would never arrive."""
    arrived: set[int] = set()
    everyone = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                arrived.add(writer.get_extra_info("peername")[1])
                if len(arrived) == 20:
                    everyone.set()
                await everyone.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):  # the lane closed its connections
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await answer(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lane = Lane(fake_adapter(base_url=f"http://127.0.0.1:{port}", concurrency=20), None)
    try:
        assert len(lane.clients) == 3
        assert len({id(client.auth) for client in lane.clients}) == 1, "one auth (one token) for the lane"
        async with asyncio.timeout(30):
            answers = await asyncio.gather(*(lane.send(httpx.Request("GET", "/ping")) for _ in range(20)))
        assert [answer.status_code for answer in answers] == [200] * 20
        assert len(arrived) == 20, "one connection per request in flight"
    finally:
        await lane.aclose()
        server.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _true(value: bool) -> bool:
    return value


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected

"""The per-provider request budget, on an injected clock."""

from __future__ import annotations

from gateway.ratelimit import RateLimit


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_requests_beyond_the_budget_wait_for_it() -> None:
    time = FakeTime()
    limit = RateLimit(200, clock=time.clock, sleep=time.sleep)  # Wix: 200 requests a minute
    for _ in range(200):
        await limit.acquire()
    assert 58.5 < time.now <= 60, "200 requests take about a minute, whatever the burst"
    assert all(wait <= 0.31 for wait in time.slept)


async def test_an_idle_budget_refills_but_bursts_at_most_a_second_worth() -> None:
    time = FakeTime()
    limit = RateLimit(120, clock=time.clock, sleep=time.sleep)
    time.now = 3600
    for _ in range(2):
        await limit.acquire()
    assert time.slept == []
    await limit.acquire()
    assert time.slept == [0.5]

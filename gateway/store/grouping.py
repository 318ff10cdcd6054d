"""Group commit: what arrives while a transaction is being written goes together in the next.

One writer task per group commit takes everything queued, writes it with one call (one
transaction) and answers each caller once the transaction holding its item has committed: a 202
still means "on disk", a delivery's outcome is recorded before its lease is let go. If a group
fails, its items are written one transaction each, so one bad item never fails the others.

The record path groups decisions (``Ledger.record_many``); the worker groups outcomes
(``Outbox.finish_many``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("consent_gateway.grouping")
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Waiting(Generic[Item, Result]):
    item: Item
    answer: asyncio.Future[Result]


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        committed: Callable[[], None] = lambda: None,
        max_group: int = 1000,
        name: str = "group-commit",
        gather: Callable[[], float] = lambda: 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        yields: int = 0,
    ) -> None:
        self.write = write  # one transaction: every item's result, in order
        self.committed = committed  # e.g. wake the worker: there are deliveries to make
        self.max_group = max_group
        self.name = name
        # Seconds to wait for more items before writing a group, asked each time: worth it only while
        # others are about to arrive (PostgreSQL's commit_delay, taken only with commit_siblings active).
        self.gather = gather
        self.sleep = sleep
        # Loop turns the writer gives before taking a group: an item whose caller is already running (a
        # request read, being validated) joins it, rather than starting a group of its own right after.
        self.yields = yields
        self._queue: list[Waiting[Item, Result]] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, item: Item) -> Result:
        """``item``'s result once the transaction holding it has committed. Queued before the first
        await, so items handed over one after another are written in the order they were given."""
        [answer] = self._hand_over([item])
        return await answer  # a caller that gives up cancels only its answer: the group is written anyway

    async def commit_all(self, items: Sequence[Item]) -> list[Result | BaseException]:
        """Each item's result, or the error that refused it alone, in order: a batch handed over in one
        go, without a task per item (giving up cancels the answers, as ``commit`` does)."""
        return await asyncio.gather(*self._hand_over(items), return_exceptions=True)

    def _hand_over(self, items: Sequence[Item]) -> list[asyncio.Future[Result]]:
        loop = asyncio.get_running_loop()
        waiting = [Waiting(item, loop.create_future()) for item in items]
        self._queue.extend(waiting)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name=self.name)
        return [each.answer for each in waiting]

    async def _write(self) -> None:
        while self._queue:
            for _ in range(self.yields):
                await asyncio.sleep(0)  # only what is ready to run runs: the writer never waits idle here
            if len(self._queue) < self.max_group and (wait := self.gather()) > 0:
                await self.sleep(wait)
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            try:
                await self._commit(group)
            except Exception:  # a bad item: each on its own, so only it fails
                log.warning("group_commit_fell_back", group=self.name, size=len(group))
                for waiting in group:
                    await self._commit([waiting])
            self.committed()

    async def _commit(self, group: list[Waiting[Item, Result]]) -> None:
        try:
            results = await self.write([waiting.item for waiting in group])
        except Exception as error:
            if len(group) > 1:
                raise
            _settle(group[0].answer, error=error)
            return
        for waiting, result in zip(group, results, strict=True):
            _settle(waiting.answer, result)


def _settle(answer: asyncio.Future[Result], result: Result | None = None, *, error: Exception | None = None) -> None:
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)  # type: ignore[arg-type]

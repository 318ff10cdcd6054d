"""Group commit: decisions that arrive while a transaction is being written go together in the next.

One writer task per process takes everything queued, records it with ``Ledger.record_many``
(one transaction, one statement per kind of row) and answers each caller once the transaction
holding its decision has committed: a 202 still means "on disk". If a group fails, its
decisions are recorded one transaction each, so one bad decision never fails the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog

from adapters.base import Adapter
from gateway.store.ledger import Ledger, Pending
from schemas.api import DecisionOut

log = structlog.get_logger("consent_gateway.grouping")


@dataclass(frozen=True)
class Waiting:
    pending: Pending
    answer: asyncio.Future[DecisionOut]


class GroupCommit:
    def __init__(
        self,
        ledger: Ledger,
        adapters: Mapping[str, Adapter],
        clock: Callable[[], datetime],
        committed: Callable[[], None],
        max_group: int = 1000,
    ) -> None:
        self.ledger = ledger
        self.adapters = adapters
        self.clock = clock
        self.committed = committed  # e.g. wake the worker: there are deliveries to make
        self.max_group = max_group
        self._queue: list[Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, pending: Pending) -> DecisionOut:
        """Recorded once the transaction holding it has committed. Queued before the first await,
        so decisions handed over in one go (a batch) merge in the order they were given."""
        answer: asyncio.Future[DecisionOut] = asyncio.get_running_loop().create_future()
        self._queue.append(Waiting(pending, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="group-commit")
        return await answer  # a caller that gives up cancels only its answer: the group is written anyway

    async def _write(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            try:
                await self._record(group)
            except Exception:  # a bad decision: each on its own, so only it fails
                log.warning("group_commit_fell_back", size=len(group))
                for waiting in group:
                    await self._record([waiting])
            self.committed()

    async def _record(self, group: list[Waiting]) -> None:
        try:
            recorded = await self.ledger.record_many([w.pending for w in group], self.adapters, self.clock())
        except Exception as error:
            if len(group) > 1:
                raise
            _settle(group[0].answer, error=error)
            return
        for waiting, decision in zip(group, recorded, strict=True):
            _settle(waiting.answer, decision)


def _settle(
    answer: asyncio.Future[DecisionOut], decision: DecisionOut | None = None, *, error: Exception | None = None
) -> None:
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        assert decision is not None
        answer.set_result(decision)

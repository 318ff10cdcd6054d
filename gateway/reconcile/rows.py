"""Keeping the drift view's stored rows exact: the refresher and the check.

Why materialized rows, and why marks: the view used to compute every subject × provider row on every
call (100,000 subjects: 16 s). Computing a row at write time instead would put the rules (projection,
shared addresses, what was acknowledged and observed) into every write path, several of them hot
(the group commit, the worker's finish). A write path only inserts a mark for the subjects it
touched, in its own transaction (``gateway.store.stale``); the refresher here computes their rows
later with the very code the view uses (``Cell``) and stores them. The view reads stored rows for
unmarked subjects and computes marked ones live, so it is never stale, however far behind the
refresher is; the view first refreshes a small backlog itself (``reconcile.stale_inline``), and with
a larger one (just after a provider's settings changed, or with no worker running) it computes every
row live, as before, until the refresher catches up.

A provider's rows depend on its settings (what it maps purposes to) as well: a fingerprint of them
is stored, and a provider new or changed marks every subject (``DriftRows.settle_providers``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import Adapter
from gateway.clock import Clock
from gateway.reconcile.cells import Cell, cells
from gateway.store import Store
from gateway.store.snapshot import Pair

SLICE = 50
"""Subjects read and computed in one go. The refresher runs in the worker's process: computing a chunk of
500 at once held its event loop for up to 75 ms, and every push in flight waited that long for its answer."""

OPERATIONAL = frozenset(
    {"enabled", "base_url", "timeout_s", "concurrency", "rate_per_minute", "drift_policy", "allow_http"}
    | {"max_response_bytes"}
)
"""Provider settings that change how the gateway talks to a provider, never what a row says."""


def fingerprint(adapter: Adapter) -> str:
    """What a provider's rows are computed with: its adapter and settings (secrets masked)."""
    settings = adapter.settings.model_dump(mode="json", exclude=set(OPERATIONAL))
    named = [f"{type(adapter).__module__}.{type(adapter).__qualname__}", settings]
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()


def stored(cell: Cell) -> dict[str, Any]:
    """A cell as the table keeps it."""
    known = cell.known
    return {
        "subject_id": cell.state.subject_id,
        "provider": cell.adapter.name,
        "status": cell.status.value,
        "acknowledged_at": known.acknowledged_at,
        "observed_at": known.observed_at,
    }


@dataclass(frozen=True)
class Disagreement:
    """A stored row that is not what computing it from scratch gives (None: no such row)."""

    subject_id: str
    provider: str
    stored: Mapping[str, Any] | None
    computed: Mapping[str, Any] | None


class Refresher:
    def __init__(self, store: Store, adapters: Mapping[str, Adapter], clock: Clock, chunk: int) -> None:
        self.rows = store.drift_rows
        self.snapshots = store.snapshots
        self.adapters = adapters
        self.clock = clock
        self.chunk = chunk

    async def settle(self) -> None:
        await self.rows.settle_providers({name: fingerprint(adapter) for name, adapter in self.adapters.items()})

    async def refresh(self, limit: int) -> int:
        """Compute and store the rows of up to ``limit`` marked subjects; how many were marked."""
        ids = await self.rows.stale(limit)
        if not ids:
            return 0
        marks = await self.rows.marks(ids)  # before the inputs: a change after this leaves its mark
        computed: dict[str, list[dict[str, Any]]] = {subject_id: [] for subject_id in ids}
        for start in range(0, len(ids), SLICE):  # the loop serves the worker's pushes between slices
            part = ids[start : start + SLICE]
            for cell in cells(self.adapters, await self.snapshots.chunk(part), part):
                computed[cell.state.subject_id].append(stored(cell))
        await self.rows.store([mark for mark, _ in marks], computed, self.clock())
        return len(ids)

    async def step(self) -> bool:
        """A worker chore: one chunk of marked subjects; whether a whole chunk was (more may wait at
        once; a trickle of marks is taken every ``reconcile.poll_s``, not in a busy loop)."""
        await self.settle()
        return await self.refresh(self.chunk) >= self.chunk

    async def catch_up(self) -> None:
        """Every marked subject's rows stored (with no writer meanwhile, none is left marked)."""
        await self.settle()
        while await self.refresh(self.chunk):
            pass

    async def before_view(self, inline: int) -> list[str] | None:
        """The subjects the view computes live: the marked ones left after refreshing a backlog of at
        most ``inline`` here; None when more are marked (the view then computes every row live)."""
        await self.settle()
        marked = await self.rows.stale(inline + 1)
        if 0 < len(marked) <= inline:
            await self.refresh(inline)
            marked = await self.rows.stale(inline + 1)
        return None if len(marked) > inline else marked

    async def check(self) -> list[Disagreement]:
        """Every stored row against the row computed from scratch, after storing the marked ones; a
        subject marked again meanwhile (a write since) is not held against the table."""
        await self.catch_up()
        found: list[Disagreement] = []
        after: str | None = None
        while ids := await self.snapshots.subject_ids(after, self.chunk):
            have = await self.rows.of(ids)
            want = {cell.pair: stored(cell) for cell in cells(self.adapters, await self.snapshots.chunk(ids), ids)}
            differ = sorted(pair for pair in have.keys() | want.keys() if have.get(pair) != want.get(pair))
            found += await self._unless_marked(differ, have, want)
            after = ids[-1]
        orphans = await self.rows.orphans(1000)
        return found + await self._unless_marked(orphans, await self.rows.of([s for s, _ in orphans]), {})

    async def _unless_marked(
        self, pairs: Sequence[Pair], have: Mapping[Pair, Any], want: Mapping[Pair, Any]
    ) -> list[Disagreement]:
        marked = {subject for _, subject in await self.rows.marks(sorted({s for s, _ in pairs}))} if pairs else set()
        return [
            Disagreement(subject, provider, have.get((subject, provider)), want.get((subject, provider)))
            for subject, provider in pairs
            if subject not in marked
        ]

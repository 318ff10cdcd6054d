"""One drift-view row's status, computed from a chunk of subjects read from the store (``Cell``), and
the full row built only for the rows that are shown. Used by the view, its refresher and its check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from adapters.base import Adapter, Observable, Projection
from gateway.rules.drift import Judgement, Known, difference, judge, status
from gateway.store.snapshot import Chunk
from schemas.api import DeliveryOut, ProviderSync, SyncStatus
from schemas.consent import SubjectState


@dataclass(frozen=True)
class Cell:
    """One row's status, computed cheaply; the full row is built only for rows that are shown."""

    adapter: Adapter
    state: SubjectState
    desired: Projection
    known: Known
    status: SyncStatus
    observe_error: str | None

    @classmethod
    def of(cls, adapter: Adapter, state: SubjectState, chunk: Chunk) -> Cell:
        pair = (state.subject_id, adapter.name)
        desired = adapter.project(state)
        known = chunk.known.get(pair, Known())
        found = status(adapter, desired, known, chunk.delivery_status(pair))
        return cls(adapter, state, desired, known, found, chunk.observe_errors.get(pair))

    @property
    def pair(self) -> tuple[str, str]:
        return self.state.subject_id, self.adapter.name

    def row(self, last_delivery: DeliveryOut | None, skew: timedelta) -> ProviderSync:
        known, adapter = self.known, self.adapter
        held = known.newest() if isinstance(adapter, Observable) else known.acknowledged
        judged = known.read_last and known.observed_at is not None and self.status is SyncStatus.diverged
        fields = set(adapter.addressed().values())
        return ProviderSync(
            subject_id=self.state.subject_id,
            provider=adapter.name,
            status=self.status,
            desired=self.desired,
            acknowledged=known.acknowledged,
            acknowledged_at=known.acknowledged_at,
            observed=known.observed,
            observed_at=known.observed_at,
            observe_error=self.observe_error,
            difference=difference(self.desired, held),
            not_applicable=adapter.not_applicable(self.state),
            not_adopted=self._judged(skew).not_adopted if judged else {},
            shared_with=sorted(
                {other for f in fields if f in self.state.shared for other in self.state.shared[f].subject_ids}
            ),
            last_delivery=last_delivery,
        )

    def _judged(self, skew: timedelta) -> Judgement:
        """The rules applied to the last read-back, as of when it was read."""
        assert self.known.observed_at is not None
        return judge(
            self.adapter, self.state, self.known.observation(), self.known.writes, self.known.observed_at, skew
        )


def cells(
    adapters: Mapping[str, Adapter], chunk: Chunk, subject_ids: Sequence[str], provider: str | None = None
) -> list[Cell]:
    """The live subjects' cells (of ``provider`` only, when given), in subject then provider order."""
    found = []
    for subject_id in subject_ids:
        state = chunk.states.get(subject_id)
        if state is None:
            continue
        for name, adapter in sorted(adapters.items()):
            if provider is None or name == provider:
                found.append(Cell.of(adapter, state, chunk))
    return found

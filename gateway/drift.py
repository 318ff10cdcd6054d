"""Where a provider stands against the gateway, for one subject: the row's status, the term-by-term
difference, and what ``newest_wins`` would adopt from it. Pure functions: no store, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.base import Adapter, Observable, Observation, Projection
from schemas.api import DeliveryStatus, SyncStatus, TermDifference
from schemas.consent import PurposeState, SubjectState

OPEN = frozenset({DeliveryStatus.pending, DeliveryStatus.retrying, DeliveryStatus.sending})


@dataclass(frozen=True)
class Known:
    """What the gateway knows a provider holds for a subject: acknowledged by a push, and what a
    read-back found (``observed``), each with its time."""

    acknowledged: Projection | None = None
    acknowledged_at: datetime | None = None
    observed: Projection | None = None
    observed_at: datetime | None = None

    def newest(self) -> Projection | None:
        """The later of the two: a push acknowledged after a read-back supersedes what it found."""
        if self.observed_at is not None and (self.acknowledged_at is None or self.observed_at > self.acknowledged_at):
            return self.observed
        return self.acknowledged

    @property
    def read_last(self) -> bool:
        return self.newest() is self.observed and self.observed is not None


def status(adapter: Adapter, desired: Projection, known: Known, delivery: DeliveryStatus | None) -> SyncStatus:
    """The row's status. A push under way is ``pending``; otherwise an observable provider is
    ``in_sync`` when what it holds is what the gateway wants, ``failed`` when the last push died,
    ``diverged`` when a read-back found otherwise. A provider without a read API is never
    ``in_sync``: ``unobservable`` once it acknowledged the desired state."""
    if delivery in OPEN:
        return SyncStatus.pending
    held = known.newest() if isinstance(adapter, Observable) else known.acknowledged
    if (held or {}) == desired:
        return SyncStatus.in_sync if isinstance(adapter, Observable) else SyncStatus.unobservable
    if delivery is DeliveryStatus.dead:
        return SyncStatus.failed
    if isinstance(adapter, Observable) and known.read_last:
        return SyncStatus.diverged
    return SyncStatus.pending


def difference(desired: Projection, held: Projection | None) -> list[TermDifference]:
    """Every leaf where desired and held differ, by dotted path; absent on one side is null."""
    if desired == (held or {}):
        return []
    wanted, found = dict(_leaves(desired)), dict(_leaves(held or {}))
    return [
        TermDifference(term=term, desired=wanted.get(term), held=found.get(term))
        for term in sorted(wanted.keys() | found.keys())
        if wanted.get(term) != found.get(term)
    ]


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix, value


@dataclass
class Adoption:
    """What ``newest_wins`` makes of a read-back: decisions to record (one per provider time, so
    each keeps the time the person acted there), and terms reported instead of adopted."""

    decisions: dict[datetime, dict[str, PurposeState]] = field(default_factory=lambda: defaultdict(dict))
    reported: dict[str, str] = field(default_factory=dict)  # term -> why it was not adopted


def adoption(adapter: Adapter, state: SubjectState, observation: Observation) -> Adoption:
    """A term the provider holds differently and changed after the gateway's own decision for the
    purposes mapped to it is adopted: an opt-out (or pending) for every purpose mapped to the
    term, an opt-in only where exactly one purpose maps to it (else reported). An older change,
    or one without a time, is not adopted: the gateway's state is pushed again."""
    wanted = adapter.term_states(adapter.project(state))
    found = adapter.term_states(observation.held)
    result = Adoption()
    for term, held in sorted(found.items()):
        when = observation.changed_at.get(term)
        if wanted.get(term) == held or when is None:
            continue
        purposes = sorted(p for p, mapped in adapter.settings.purposes.items() if mapped == term)
        decided = [state.purposes[p].occurred_at for p in purposes if p in state.purposes]
        if decided and when <= max(decided):
            continue
        if held is PurposeState.granted and len(purposes) != 1:
            result.reported[term] = f"an opt-in on {term} maps to several purposes ({', '.join(purposes)})"
            continue
        result.decisions[when] |= dict.fromkeys(purposes, held)
    return result

"""Where a provider stands against the gateway, for one subject: the row's status, the term-by-term
difference, and which of the terms it holds differently are a person's change there (``judge``).
Pure functions: no store, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from adapters.base import Adapter, Observable, Observation, Projection
from gateway.rules.provenance import Provenance
from schemas.api import DeliveryStatus, SyncStatus, TermDifference
from schemas.consent import PurposeState, SubjectState


@dataclass(frozen=True)
class Known:
    """What the gateway knows a provider holds for a subject: acknowledged by a push, and what a
    read-back found (``observed``, with the provider's own time of each term), each with its time;
    and the gateway's own writes there since its last acknowledged one."""

    acknowledged: Projection | None = None
    acknowledged_at: datetime | None = None
    observed: Projection | None = None
    observed_at: datetime | None = None
    changed_at: Mapping[str, datetime] = field(default_factory=dict)
    writes: Provenance = field(default_factory=Provenance)

    def observation(self) -> Observation:
        return Observation(held=self.observed or {}, changed_at=dict(self.changed_at))

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
    if delivery is not None and delivery.under_way:
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
class Judgement:
    """What a read-back's differing terms are: changes a person made at the provider, which
    ``newest_wins`` adopts (one decision per provider time, so each keeps the time the person acted
    there); the terms that are not such a change, and why; and opt-outs on an address other subjects
    share, left there as the provider holds them."""

    decisions: dict[datetime, dict[str, PurposeState]] = field(default_factory=lambda: defaultdict(dict))
    not_adopted: dict[str, str] = field(default_factory=dict)  # term -> why
    not_theirs: set[str] = field(default_factory=set)  # the gateway's own write, or a shared address: never adoptable
    kept: set[str] = field(default_factory=set)


def judge(
    adapter: Adapter,
    state: SubjectState,
    seen: Observation,
    provenance: Provenance,
    read_at: datetime,
    skew: timedelta,
) -> Judgement:
    """Which terms the provider holds differently are a person's change there, by the rules that hold
    wherever a provider change enters: dated; not the gateway's own write (``provenance``); dated at
    most ``skew`` after the read; on an address kept per address (Wix), dated more than ``skew`` after
    the subject came to hold it with the subjects holding it now, and held by no other subject; newer
    than the gateway's decision for the purposes mapped to the term; an opt-in only where one purpose
    maps to the term. An opt-out applies to every purpose mapped to its term."""
    wanted = adapter.term_states(adapter.project(state))
    result = Judgement()
    for term, held in sorted(adapter.term_states(seen.held).items()):
        if wanted.get(term) == held:
            continue
        when = seen.changed_at.get(term)
        purposes = sorted(p for p, mapped in adapter.settings.purposes.items() if mapped == term)
        refusal = _not_a_change(adapter, state, term, held, when, provenance, read_at, skew)
        why, theirs = refusal if refusal is not None else (None, True)
        others = state.shared.get(adapter.addressed().get(term, ""))
        if others is not None:
            shared = f"a shared address (also held by {others.named()}): never adopted into one subject"
            if why is None and RANK[held] < RANK[wanted.get(term, PurposeState.granted)]:
                result.kept.add(term)  # someone holding it opted out there: never pushed over
                shared += "; its opt-out is kept there"
            why, theirs = (shared if why is None else f"{why}; {shared}"), False
        elif why is None and held is PurposeState.granted and len(purposes) != 1:
            why = f"an opt-in on {term} maps to several purposes ({', '.join(purposes)})"
        if not theirs:
            result.not_theirs.add(term)
        if why is not None:
            result.not_adopted[term] = why
        elif when is not None:
            result.decisions[when] |= dict.fromkeys(purposes, held)
    return result


RANK = {PurposeState.denied: 0, PurposeState.pending: 1, PurposeState.granted: 2}  # most protective first


def _not_a_change(
    adapter: Adapter,
    state: SubjectState,
    term: str,
    held: PurposeState,
    when: datetime | None,
    provenance: Provenance,
    read_at: datetime,
    skew: timedelta,
) -> tuple[str, bool] | None:
    """Why a term held differently is not a person's change at the provider, and whether what it holds
    may still be the person's (an admin may adopt it); None when it is their change."""
    if when is None:
        return "no provider time: it cannot be dated", True
    if provenance.ours(term, held, when, record_stamped=adapter.record_stamped):
        return "the gateway's own write, read back", False
    if when > read_at + skew:
        return f"provider time in the future ({when.isoformat()})", True
    # another subject's write there is dated at most skew after it left (its clock may run ahead): an
    # opt-in is held to that margin, an opt-out only to the moment (in doubt, the protective reading)
    since = state.address_since.get(adapter.addressed().get(term, ""))
    if since is not None and when <= since + (skew if held is PurposeState.granted else timedelta(0)):
        return (
            f"dated before the subject held this address with the subjects holding it now ({since.isoformat()})",
            False,
        )
    records = state.term_records(adapter.settings.purposes, term, adapter.addressed().get(term))
    if records and when <= max(record.occurred_at for record in records):
        return "older than the gateway's decision", True
    return None

"""What the gateway itself wrote to a provider, so a read-back can tell its own writes from changes
made there.

Every push request says what it sets (``adapters.base.json_request(writes=…)``): per provider term,
the state and the provider time it carries (Masivo ``consent_timestamp``, Wix activity
``updatedDate``, Intempt ``timestamp``). The worker journals them before each request is sent (an
answer lost on the way may hide that it landed) and keeps, per subject × provider and term, the
newest writes (``KEPT``), marking where the last acknowledged one starts the writes that may be what
the provider holds now. A term held with a time the gateway wrote on it, or (where the provider keeps
one time per record) with an opt-in the gateway may have left there, is the gateway's own write,
never a person's change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.base import Write
from schemas.consent import PurposeState, parse_timestamp

KEPT = 64  # writes kept per term, newest last


def same_moment(one: datetime, other: datetime) -> bool:
    """Equal to the millisecond: providers keep times at that precision (Wix), or as sent."""
    return abs((one - other).total_seconds()) < 0.001


@dataclass(frozen=True)
class Writes:
    """One term's writes, oldest first, each once; ``live`` counts the newest ones that may be what the
    provider holds: the last acknowledged write and every write tried after it (all, if none was)."""

    sent: tuple[Write, ...] = ()
    live: int = 0

    def after(self, new: Iterable[Write], acknowledged: bool) -> Writes:
        sent, live = list(self.sent), self.live
        for write in new:
            if write in sent:  # sent again: it moves to the end
                live -= int(sent.index(write) >= len(sent) - live)
                sent.remove(write)
            sent.append(write)
            live += 1
        live = 1 if acknowledged else live
        return Writes(tuple(sent[-KEPT:]), min(live, KEPT))

    def holding(self) -> tuple[Write, ...]:
        """The writes the provider may hold now."""
        return self.sent[len(self.sent) - self.live :]


@dataclass(frozen=True)
class Provenance:
    """Per term, the gateway's own writes to one provider for one subject."""

    terms: Mapping[str, Writes] = field(default_factory=dict)

    @classmethod
    def from_json(cls, stored: Mapping[str, Any] | None) -> Provenance:
        return cls(
            {
                term: Writes(
                    tuple((PurposeState(state), parse_timestamp(at)) for state, at in kept["sent"]), kept["live"]
                )
                for term, kept in (stored or {}).items()
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            term: {"sent": [[state.value, at.isoformat()] for state, at in kept.sent], "live": kept.live}
            for term, kept in self.terms.items()
        }

    def after_push(self, sent: Iterable[Mapping[str, Write]], acknowledged: bool) -> Provenance:
        """Once a push sent these requests' writes: on success its last write per term is the
        acknowledged one; after a failure every write tried may be what the provider holds."""
        fresh: dict[str, list[Write]] = {}
        for request in sent:
            for term, write in request.items():
                fresh.setdefault(term, []).append(write)
        terms = dict(self.terms)
        for term, writes in fresh.items():
            terms[term] = terms.get(term, Writes()).after(writes, acknowledged)
        return Provenance(terms)

    def disowned(self) -> Provenance:
        """The provider holds none of these writes any more (it holds what a person set there, which the
        gateway adopted); their times still tell the gateway's own writes apart if they come back."""
        return Provenance({term: Writes(kept.sent, 0) for term, kept in self.terms.items()})

    def ours(self, term: str, state: PurposeState, when: datetime | None, *, record_stamped: bool) -> bool:
        """Whether a term held as ``state`` at the provider's time ``when`` may be the gateway's own write.

        A time the gateway wrote on that term is its own, whatever the state. Where the provider keeps
        one time for the whole record (Masivo), that time dates whichever term someone changed, so a
        term still holding an opt-in the gateway may have left there is its own too. An opt-out is never
        taken for the gateway's echo on that ground alone: in doubt, the more protective reading wins.
        """
        kept = self.terms.get(term, Writes())
        if when is not None and any(same_moment(when, at) for _, at in kept.sent):
            return True
        return record_stamped and state is PurposeState.granted and any(w is state for w, _ in kept.holding())

"""What the admin page shows, shaped for its templates: a subject as one table (purposes as rows,
providers as columns, each cell what the provider should hold and what it holds), and a page of
drift rows with its place in the whole list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from adapters.base import Adapter
from schemas.api import ProviderSync, SubjectOut


@dataclass(frozen=True)
class Cell:
    """One purpose at one provider."""

    term: str  # the provider's name for it ("" when the provider is not sent this purpose)
    desired: str  # the state the provider should hold
    held: str  # the state it holds, as last read back or acknowledged
    at: datetime | None  # when that was learnt
    differs: bool
    note: str = ""  # why there is nothing to compare (not sent, not applicable, never acknowledged)


def subject_grid(subject: SubjectOut, adapters: Mapping[str, Adapter]) -> list[tuple[str, dict[str, Cell]]]:
    """Per purpose (rows), per provider (columns), a Cell."""
    rows = {row.provider: row for row in subject.providers if row.provider in adapters}
    return [
        (purpose, {name: _cell(adapters[name], row, purpose, record.state.value) for name, row in rows.items()})
        for purpose, record in subject.state.purposes.items()
    ]


def _cell(adapter: Adapter, row: ProviderSync, purpose: str, decided: str) -> Cell:
    term = adapter.settings.purposes.get(purpose)
    if term is None:
        return Cell("", "", "", None, False, "not sent here")
    if term in row.not_applicable:
        return Cell(term, "", "", None, False, f"not applicable: {row.not_applicable[term]}")
    desired = _state(adapter, row.desired, term) or decided
    held_projection = _newest(row)
    if not held_projection:
        return Cell(term, desired, "", None, True, "never acknowledged")
    differs = any(term in difference.term.split(".") for difference in row.difference)
    held = (_state(adapter, held_projection, term) or "differs") if differs else desired
    at = max((moment for moment in (row.observed_at, row.acknowledged_at) if moment is not None), default=None)
    return Cell(term, desired, held, at, differs)


def _state(adapter: Adapter, projection: Mapping[str, object], term: str) -> str:
    found = adapter.term_states(dict(projection)).get(term)
    return found.value if found is not None else ""


def _newest(row: ProviderSync) -> dict[str, object] | None:
    if row.observed is not None and row.observed_at is not None:
        if row.acknowledged_at is None or row.observed_at >= row.acknowledged_at:
            return row.observed
    return row.acknowledged


def adoptable(row: ProviderSync) -> bool:
    """A read-back found something other than what the gateway wants, and not only changes that
    cannot be the person's (``not_adopted``): there is a state to adopt."""
    if row.observed is None or row.status.value != "diverged":
        return False
    return any(not set(difference.term.split(".")) & set(row.not_adopted) for difference in row.difference)

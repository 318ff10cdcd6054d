"""Who holds which address: the index of subjects' emails and phones (table ``addresses``).

A provider that keeps one consent per address (Wix) shares it between every subject holding that
address, and keeps the consent of an address a subject left. The index tells both: the other live
subjects holding a subject's address now (``SubjectState.shared``), since when they are the ones
holding it (``address_since``, from ``address_company``: a provider time before that may be someone
else's), and the addresses
a subject held before that nobody holds now (``SubjectState.former``: withdrawn at the provider,
removed at erasure).
Emails are compared in lower case, as Wix does; phones are E.164 already.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, select, type_coerce

from gateway.store.db import Executor, upsert
from gateway.store.tables import UTCDateTime, address_company, addresses, subject_purposes, subjects
from schemas.consent import FormerAddress, PurposeRecord, PurposeState, Shared, SubjectState

RANK = {PurposeState.denied: 0, PurposeState.pending: 1, PurposeState.granted: 2}  # most protective first
BY_RANK = {rank: state for state, rank in RANK.items()}

KINDS = ("email", "phone")


def normalized(value: str) -> str:
    """An address as the index keeps it: an email in lower case, a phone as it is."""
    return value.strip().lower() if "@" in value else value


def current(state: SubjectState | None) -> dict[str, str]:
    """The subject's addresses now, per kind."""
    if state is None:
        return {}
    return {kind: normalized(value) for kind in KINDS if (value := getattr(state, kind))}


async def attach(conn: Executor, states: Sequence[SubjectState], *, former: bool = False) -> list[SubjectState]:
    """``states`` with ``shared`` and ``address_since`` filled in from the index (and ``former``, when
    asked), in order. Three queries, whatever the number of subjects sharing an address: what the
    other holders decided is summed up in SQL."""
    own: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)  # (subject, kind) -> its index rows
    asking = {state.subject_id for state in states}
    query = select(addresses).where(addresses.c.subject_id.in_(asking))
    for row in (await conn.execute(query if former else query.where(addresses.c.current == 1))).mappings():
        own[(row["subject_id"], row["kind"])].append(dict(row))
    held = [current(state) for state in states]
    wanted = {address for now in held for address in now.values()}
    wanted |= {row["address"] for rows in own.values() for row in rows if not row["current"]}
    if not wanted:
        return list(states)
    others = await _others(conn, sorted(wanted), asking)
    for state, now in zip(states, held, strict=True):  # the subjects asked about are one another's others
        if state.erased_at is None:
            for address in now.values():
                others[address].asking[state.subject_id] = state.purposes
    company = select(address_company).where(address_company.c.address.in_(sorted(wanted)))
    changed = {row.address: row.changed_at for row in await conn.execute(company)}
    return [_attached(state, now, others, own, changed) for state, now in zip(states, held, strict=True)]


SHOWN = 20  # other holders named on a row; all of them count


@dataclass
class Others:
    """The live subjects holding one address, summed up: who (the first ``SHOWN``), how many, and per
    purpose the most protective state among them with the newest time. Subjects being attached are
    kept apart (``asking``): each is left out of its own others."""

    ids: list[str] = field(default_factory=list)
    count: int = 0
    purposes: dict[str, PurposeRecord] = field(default_factory=dict)
    asking: dict[str, Mapping[str, PurposeRecord]] = field(default_factory=dict)

    def fold(self, purpose: str, rank: int, newest: datetime) -> None:
        found = self.purposes.get(purpose)
        if found is not None:
            rank, newest = min(rank, RANK[found.state]), max(newest, found.occurred_at)
        self.purposes[purpose] = PurposeRecord.model_construct(state=BY_RANK[rank], occurred_at=newest)

    def without(self, subject_id: str) -> Shared | None:
        """The others as ``subject_id`` sees them; None when nobody else holds the address."""
        if not self.count and self.asking.keys() <= {subject_id}:
            return None
        summed = Others(list(self.ids), self.count, dict(self.purposes))
        for other, purposes in self.asking.items():
            if other != subject_id:
                summed.ids, summed.count = sorted([*summed.ids, other])[:SHOWN], summed.count + 1
                for purpose, record in purposes.items():
                    summed.fold(purpose, RANK[record.state], record.occurred_at)
        if not summed.count:
            return None
        return Shared.model_construct(subject_ids=summed.ids, count=summed.count, purposes=summed.purposes)


def _attached(
    state: SubjectState,
    now: Mapping[str, str],
    others: Mapping[str, Others],
    own: Mapping[tuple[str, str], list[dict[str, Any]]],
    changed: Mapping[str, datetime],
) -> SubjectState:
    me = state.subject_id
    shared = {kind: found for kind, address in now.items() if (found := others[address].without(me)) is not None}
    rows = {kind: own.get((me, kind), []) for kind in KINDS}
    since = {kind: changed[address] for kind, address in now.items() if address in changed}
    formers = {
        kind: gone
        for kind, found in rows.items()
        if (
            gone := [
                FormerAddress.model_construct(address=row["address"], replaced_at=row["replaced_at"])
                for row in found
                if not row["current"] and others[row["address"]].without(me) is None
            ]
        )
    }
    if not (shared or formers or since):
        return state
    return state.model_copy(update={"shared": shared, "former": formers, "address_since": since})


async def _others(conn: Executor, wanted: list[str], asking: set[str]) -> defaultdict[str, Others]:
    """Per address, the live (decided, not erased) subjects other than ``asking`` holding it now."""
    held = (
        (addresses.c.address.in_(wanted))
        & (addresses.c.current == 1)
        & addresses.c.subject_id.not_in(sorted(asking))
        & subjects.c.erased_at.is_(None)
    )
    live = addresses.join(subjects, subjects.c.id == addresses.c.subject_id)
    nth = func.row_number().over(partition_by=addresses.c.address, order_by=addresses.c.subject_id)
    count = func.count().over(partition_by=addresses.c.address)
    columns = (addresses.c.address, addresses.c.subject_id, nth.label("nth"), count.label("n"))
    ranked = select(*columns).select_from(live).where(held).subquery()
    found: defaultdict[str, Others] = defaultdict(Others)
    for address, subject_id, _, total in await conn.execute(select(ranked).where(ranked.c.nth <= SHOWN)):
        found[address].ids.append(subject_id)
        found[address].count = total
    rank = case(*((subject_purposes.c.state == state.value, n) for state, n in RANK.items()), else_=len(RANK))
    newest = type_coerce(func.max(subject_purposes.c.occurred_at), UTCDateTime())
    summed = (
        select(addresses.c.address, subject_purposes.c.purpose, func.min(rank), newest)
        .select_from(live.join(subject_purposes, subject_purposes.c.subject_id == addresses.c.subject_id))
        .where(held, addresses.c.address.in_(list(found)))
        .group_by(addresses.c.address, subject_purposes.c.purpose)
    )
    if found:
        for address, purpose, lowest, moment in await conn.execute(summed):
            found[address].fold(purpose, lowest, moment)
    return found


async def moved(conn: Executor, changes: Sequence[tuple[SubjectState | None, SubjectState]], now: datetime) -> None:
    """Keep the index up to date with decisions just merged (in order, several per subject possible):
    an address a decision replaced becomes a former one, dated by that decision; a new one is current.
    Wherever the subjects holding an address change (one joins, leaves or is erased), the address's
    company changed now: a provider time before that may be another subject's (one row per address,
    however many hold it)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    touched: set[str] = set()
    for before, after in changes:
        old, new = current(before), current(after)
        leaving = after.erased_at is not None and (before is None or before.erased_at is None)
        for kind in KINDS:
            if old.get(kind) == new.get(kind) and not leaving:
                continue
            touched |= {address for address in (old.get(kind), new.get(kind)) if address}
            if kind in old and old.get(kind) != new.get(kind):
                rows[(after.subject_id, kind, old[kind])] = _row(after.subject_id, kind, old[kind], after.occurred_at)
            if kind in new and not leaving:
                rows[(after.subject_id, kind, new[kind])] = _row(after.subject_id, kind, new[kind], None)
    await upsert(conn, addresses, list(rows.values()), ["subject_id", "kind", "address"])
    company = [{"address": address, "changed_at": now} for address in sorted(touched)]
    await upsert(conn, address_company, company, ["address"])


def _row(subject_id: str, kind: str, address: str, replaced_at: datetime | None) -> dict[str, Any]:
    return {
        "subject_id": subject_id,
        "kind": kind,
        "address": address,
        "current": int(replaced_at is None),
        "replaced_at": replaced_at,
    }


def kind(address: str) -> str:
    return "email" if "@" in address else "phone"


async def first_holders(conn: Executor, wanted: set[str], leaving: set[str]) -> dict[str, str]:
    """Per address, the first live subject (in id order) other than ``leaving`` that holds it now."""
    if not wanted:
        return {}
    found = await _others(conn, sorted(wanted), leaving)
    return {address: others.ids[0] for address, others in found.items() if others.ids}


async def forget(conn: Executor, subject_id: str) -> None:
    """An erased subject's addresses, current and former, out of the index (and out of the record of
    who held an address when, once nobody is left holding it)."""
    theirs = select(addresses.c.address).where(addresses.c.subject_id == subject_id)
    held = (await conn.execute(theirs)).scalars().all()
    await conn.execute(delete(addresses).where(addresses.c.subject_id == subject_id))
    kept = select(addresses.c.address).where(addresses.c.address.in_(held))
    await conn.execute(
        delete(address_company).where(address_company.c.address.in_(held), address_company.c.address.not_in(kept))
    )

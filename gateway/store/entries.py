"""Writing ledger entries in groups: every statement runs once per group, with a row per entry.

An entry is planned in Python first (the merge, which providers it changes, what they are
known to hold); then the whole group is written with a handful of statements, whatever its
size: the ledger rows, the subjects' final states, acknowledgements, and the outbox rows
(coalesced: an entry joins its provider's delivery that has not been sent yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from adapters.base import Adapter, Projection
from gateway.rules.provenance import Provenance
from gateway.store import addresses, stale
from gateway.store.db import Executor, insert, insert_new, upsert
from gateway.store.ids import new_id
from gateway.store.outbox import delivery_out, joinable
from gateway.store.snapshot import EPOCH
from gateway.store.tables import (
    decisions,
    deliveries,
    delivery_decisions,
    expiries,
    provider_state,
    subject_purposes,
    subjects,
)
from schemas.api import DecisionOut, DeliveryOut, DeliveryStatus
from schemas.consent import Decision, SubjectState

SUBJECT_FIELDS = {"email", "phone", "tcf_string", "vendors", "expires_at", "source", "note", "occurred_at", "erased_at"}

# The statements every group runs, built once: building them afresh (and their compiled-cache keys) cost
# a group ~0.75 ms whatever its size, about what writing three decisions costs.
SUBJECTS_LOCKED = (
    select(subjects)
    .where(subjects.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(subjects.c.id)
    .with_for_update()
)
THEIR_PURPOSES = select(subject_purposes).where(subject_purposes.c.subject_id.in_(bindparam("ids", expanding=True)))
SUBJECT_WRITTEN = (
    update(subjects)
    .where(subjects.c.id == bindparam("_id"))
    .values({name: bindparam(name) for name in [*sorted(SUBJECT_FIELDS), "updated_at"]})
)
OPEN_DELIVERIES = (
    select(deliveries)
    .where(
        deliveries.c.subject_id.in_(bindparam("subjects", expanding=True)),
        deliveries.c.provider.in_(bindparam("providers", expanding=True)),
        joinable(bindparam("now")),
    )
    .order_by(deliveries.c.id)
    .with_for_update()
)
"""The deliveries (subject, provider) pairs can join, locked, and a few others: by the indexed columns
one at a time (SQLite scans the table for a row-value IN), so by the subjects' own index
(``ix_deliveries_pair``), never by the provider's whole backlog (parameters: ``open_pairs``)."""
DECISIONS_ADDED, EXPIRIES_ADDED = decisions.insert(), expiries.insert()
DELIVERIES_ADDED, LINKS_ADDED = deliveries.insert(), delivery_decisions.insert()


@dataclass(frozen=True)
class Entry:
    """A ledger row about to be written: the decision, the purposes it set, and for every
    purpose whose stored record it rewrites, the decision that record comes from.

    ``force``: providers pushed again whatever they acknowledged (a repair).
    """

    id: str
    decision: Decision
    effective: list[str]
    winners: dict[str, str]
    superseded: list[str] | None = None  # default: the decision's purposes it did not set
    force: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Plan:
    """What writing one entry does, worked out before any statement runs."""

    entry: Entry
    before: SubjectState | None
    after: SubjectState
    changed: dict[str, bool]  # provider -> a push is owed (else a ``skipped`` delivery records that)
    acknowledge: dict[str, Projection]  # providers that hold the new state already
    forget: frozenset[str]  # providers whose acknowledged state is unknown now: the push sends everything
    left: dict[str, list[str]]  # addresses the subject leaves -> providers keeping one consent per address

    @classmethod
    def of(
        cls,
        entry: Entry,
        before: SubjectState | None,
        after: SubjectState,
        adapters: Mapping[str, Adapter],
        held: Mapping[str, Projection] | None = None,
    ) -> Plan:
        """``held``: providers known to hold a projection already (the provider a decision was
        adopted from): where it is what they should hold, nothing is pushed back to them."""
        if entry.force:  # a repair changes no state: only the providers it pushes again get a delivery
            changed = dict.fromkeys(sorted(entry.force), True)
        else:
            changed = {
                name: (adapter.project(before) if before else {}) != adapter.project(after)
                for name, adapter in adapters.items()
            }
        acknowledge = {
            name: projection for name, projection in (held or {}).items() if adapters[name].project(after) == projection
        }
        changed |= dict.fromkeys(acknowledge, False)
        return cls(entry, before, after, changed, acknowledge, entry.force, _left(before, after, adapters, changed))

    def row(self, now: datetime) -> dict[str, Any]:
        decision, entry = self.entry.decision, self.entry
        superseded = (
            sorted(set(decision.purposes) - set(entry.effective)) if entry.superseded is None else entry.superseded
        )
        return {
            "id": entry.id,
            "subject_id": decision.subject.id,
            "occurred_at": decision.occurred_at,
            "received_at": now,
            "body": decision.model_dump(mode="json"),
            "effective": entry.effective,
            "superseded": superseded,
        }


def _left(
    before: SubjectState | None, after: SubjectState, adapters: Mapping[str, Adapter], changed: Mapping[str, bool]
) -> dict[str, list[str]]:
    """The addresses an entry takes the subject away from (a changed address, or an erasure), each with
    the providers keeping one consent per address that this entry pushes. (Whether the subject's own
    consent at a provider changes is all ``changed`` needs: a shared consent only changes with it.)"""
    old, new = addresses.current(before), addresses.current(after)
    erased = after.erased_at is not None and before is not None
    gone = sorted(address for kind, address in old.items() if address != new.get(kind) or erased)
    return {
        address: [
            name
            for name, adapter in sorted(adapters.items())
            if changed.get(name) and addresses.kind(address) in adapter.addressed().values()
        ]
        for address in gone
    }


async def lock_subjects(conn: Executor, subject_ids: Sequence[str], now: datetime) -> dict[str, Any]:
    """Create the subjects' rows if new, then lock them (in id order, so two groups never wait on
    each other in a circle) and read them; returns the raw rows and purpose rows by subject."""
    ordered = sorted(set(subject_ids))
    if not ordered:
        return {}
    placeholder = [
        {"id": sid, "vendors": {}, "source": "web", "occurred_at": EPOCH, "updated_at": now} for sid in ordered
    ]
    await conn.execute(insert_new(conn, subjects, ["id"]), placeholder)
    rows = {row["id"]: row for row in (await conn.execute(SUBJECTS_LOCKED, {"ids": ordered})).mappings()}
    purposes: dict[str, list[Any]] = {sid: [] for sid in ordered}
    for purpose in (await conn.execute(THEIR_PURPOSES, {"ids": ordered})).mappings():
        purposes[purpose["subject_id"]].append(purpose)
    return {sid: (rows[sid], purposes[sid]) for sid in ordered}


async def write(conn: Executor, plans: Sequence[Plan], now: datetime) -> list[DecisionOut]:
    """Write the planned entries, in order, with one statement per kind of row; returns each
    entry as recorded, with the deliveries it rides on. The subjects must be locked."""
    rows = [plan.row(now) for plan in plans]
    await conn.execute(DECISIONS_ADDED, rows)
    due = [  # each decision that won purposes until a time: gateway.expiry denies them then
        {"decision_id": plan.entry.id, "subject_id": plan.after.subject_id, "due_at": plan.entry.decision.expires_at}
        for plan in plans
        if plan.entry.decision.expires_at is not None and plan.entry.effective
    ]
    if due:
        await conn.execute(EXPIRIES_ADDED, due)
    await _write_states(conn, plans, now)
    await addresses.moved(conn, [(plan.before, plan.after) for plan in plans], now)
    held = [addresses.current(state) for plan in plans for state in (plan.before, plan.after)]
    await stale.mark(conn, [plan.after.subject_id for plan in plans], {a for now in held for a in now.values()})
    await _write_acknowledgements(conn, plans, now)
    carried = await _enqueue(conn, plans, now)
    return [
        decision_out(row, carried[plan.entry.id], plan.entry.decision) for row, plan in zip(rows, plans, strict=True)
    ]


async def _write_states(conn: Executor, plans: Sequence[Plan], now: datetime) -> None:
    """Each subject's final state after the group, and each purpose record the group rewrote."""
    final: dict[str, SubjectState] = {}
    purposes: dict[tuple[str, str], dict[str, Any]] = {}
    for plan in plans:
        state = final[plan.after.subject_id] = plan.after
        for purpose, decision_id in plan.entry.winners.items():
            record = state.purposes[purpose]
            purposes[(state.subject_id, purpose)] = {
                "subject_id": state.subject_id,
                "purpose": purpose,
                "state": record.state.value,
                "occurred_at": record.occurred_at,
                "decision_id": decision_id,
            }
    await upsert(conn, subject_purposes, list(purposes.values()), ["subject_id", "purpose"])
    await conn.execute(
        SUBJECT_WRITTEN,
        [{"_id": sid, **state.model_dump(include=SUBJECT_FIELDS), "updated_at": now} for sid, state in final.items()],
    )


async def _write_acknowledgements(conn: Executor, plans: Sequence[Plan], now: datetime) -> None:
    held: list[dict[str, Any]] = [
        {"subject_id": plan.after.subject_id, "provider": name, "acknowledged": projection, "acknowledged_at": now}
        for plan in plans
        for name, projection in plan.acknowledge.items()
    ]
    if held:  # adopted from there: it holds the person's own state now, none of the gateway's writes
        pairs = {(row["subject_id"], row["provider"]) for row in held}
        writes = await _writes(conn, pairs)
        statement = insert(conn, provider_state)
        update_ = {
            "acknowledged": statement.excluded.acknowledged,
            "acknowledged_at": statement.excluded.acknowledged_at,
            "writes": statement.excluded.writes,
        }
        await conn.execute(
            statement.on_conflict_do_update(index_elements=["subject_id", "provider"], set_=update_),
            [row | {"memo": {}, "writes": writes.get((row["subject_id"], row["provider"]), {})} for row in held],
        )
    forgotten = [
        {"_subject": plan.after.subject_id, "_provider": name} for plan in plans for name in sorted(plan.forget)
    ]
    if forgotten:
        table = provider_state
        statement = (
            update(table)
            .where(table.c.subject_id == bindparam("_subject"), table.c.provider == bindparam("_provider"))
            .values(acknowledged={})
        )
        await conn.execute(statement, forgotten)


async def _writes(conn: Executor, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The gateway's writes to these (subject, provider) pairs, none of them held there any more."""
    table = provider_state
    query = select(table.c.subject_id, table.c.provider, table.c.writes).where(
        table.c.subject_id.in_(sorted({subject for subject, _ in pairs}))
    )
    found = {(subject, provider): stored for subject, provider, stored in await conn.execute(query)}
    return {pair: Provenance.from_json(found.get(pair)).disowned().to_json() for pair in pairs}


async def _enqueue(conn: Executor, plans: Sequence[Plan], now: datetime) -> dict[str, list[DeliveryOut]]:
    """Coalesce: each entry joins its changed providers' deliveries that have not been sent yet
    (or one an earlier entry of the group queued), else queues new ones; an unchanged provider
    gets a ``skipped`` row. Returns the deliveries each entry rides on.

    The open rows are locked, so a worker claiming one meanwhile either waits for this group or
    is waited for (and then the entry gets a delivery of its own)."""
    also = await _left_behind(conn, plans)
    pairs = sorted(
        {(plan.after.subject_id, name) for plan in plans for name, yes in plan.changed.items() if yes}
        | {pair for pairs in also for pair in pairs}
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    if pairs:
        wanted = set(pairs)
        rows = (await conn.execute(OPEN_DELIVERIES, open_pairs(pairs, now))).mappings()
        found = {pair: dict(row) for row in rows if (pair := (row["subject_id"], row["provider"])) in wanted}
    new_rows: list[dict[str, Any]] = []
    links: list[dict[str, str]] = []
    carried: dict[str, list[DeliveryOut]] = {}
    for index, plan in enumerate(plans):
        riding = []
        for name, yes in sorted(plan.changed.items()):
            pair = (plan.after.subject_id, name)
            row = found.get(pair) if yes else None
            if row is None:
                status = DeliveryStatus.pending if yes else DeliveryStatus.skipped
                row = _new_delivery(plan.entry.id, pair, status, now)
                new_rows.append(row)
                if yes:
                    found[pair] = row
            links.append({"delivery_id": row["id"], "decision_id": plan.entry.id})
            riding.append(row)
        carried[plan.entry.id] = [delivery_out(row) for row in riding]
        # another subject's delivery, not carried by this entry (a set minus found.keys() walks every key found)
        for pair in sorted(pair for pair in also[index] if pair not in found):
            found[pair] = _new_delivery(plan.entry.id, pair, DeliveryStatus.pending, now)
            new_rows.append(found[pair])
    if new_rows:
        await conn.execute(DELIVERIES_ADDED, new_rows)
    if links:
        await conn.execute(LINKS_ADDED, links)
    return carried


def open_pairs(pairs: Sequence[tuple[str, str]], now: datetime) -> dict[str, Any]:
    """:data:`OPEN_DELIVERIES`'s parameters for these (subject, provider) pairs."""
    return {
        "subjects": sorted({subject for subject, _ in pairs}),
        "providers": sorted({provider for _, provider in pairs}),
        "now": now,
    }


async def _left_behind(conn: Executor, plans: Sequence[Plan]) -> list[set[tuple[str, str]]]:
    """Per plan, the (subject, provider) pairs pushed because the subject left an address others hold:
    the first of them, so that consent is rewritten without this subject's decisions (one push does it
    for all of them, however many they are)."""
    leaving = {plan.after.subject_id for plan in plans if plan.left}
    heirs = await addresses.first_holders(conn, {address for plan in plans for address in plan.left}, leaving)
    return [
        {(heirs[address], name) for address, names in plan.left.items() if address in heirs for name in names}
        for plan in plans
    ]


def _new_delivery(decision_id: str, pair: tuple[str, str], status: DeliveryStatus, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "decision_id": decision_id,
        "subject_id": pair[0],
        "provider": pair[1],
        "status": status.value,
        "attempts": 0,
        "reschedules": 0,
        "last_error": None,
        "last_status_code": None,
        "next_attempt_at": now,
        "lease_until": None,
        "recheck": 0,
        "created_at": now,
        "updated_at": now,
    }


def decision_out(row: Mapping[Any, Any], carried: list[DeliveryOut], decision: Decision | None = None) -> DecisionOut:
    """A ledger row as the API shows it (``decision``: the one just written, not read back). Validated,
    as ``delivery_out`` is, for speed; the decision and deliveries, models already, are taken as they are."""
    return DecisionOut.model_validate(
        {
            "id": row["id"],
            "subject_id": row["subject_id"],
            "received_at": row["received_at"],
            "decision": decision or Decision.model_validate(row["body"], strict=False),
            "effective_purposes": row["effective"],
            "superseded_purposes": row["superseded"],
            "deliveries": carried,
        }
    )

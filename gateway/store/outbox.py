"""The outbox: deliveries claimed under leases, their attempts, dead letters and replay."""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    Row,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import BindParameter

from adapters.base import Ack, Projection, Write
from gateway.rules.provenance import Provenance
from gateway.store import stale
from gateway.store.db import Executor, read, reader, rows_in, transaction
from gateway.store.ids import new_id
from gateway.store.tables import deliveries, delivery_attempts, delivery_decisions, provider_state
from schemas.api import AttemptOut, DeliveryOut, DeliveryStatus
from schemas.consent import parse_timestamp

JOINABLE = (DeliveryStatus.pending, DeliveryStatus.retrying)  # not sent yet: a newer decision joins it
WAITING = deliveries.c.status.in_([status.value for status in JOINABLE])  # a delivery row that is JOINABLE


def joinable(now: datetime | BindParameter[Any]) -> Any:
    """A waiting delivery a newer push may ride on: one waiting for its retry, or pending and due. A
    pending one due later is a recheck (``Ended.recheck_at``): it must be pushed then, whatever is pushed
    meanwhile, so a newer decision gets a delivery of its own, due now."""
    # no OR of the two: SQLite would answer it with two index searches, the pending one walking every
    # due delivery of the provider (a backlog) instead of the subject's own, by ix_deliveries_pair
    retrying = deliveries.c.status == DeliveryStatus.retrying.value
    return and_(WAITING, case((retrying, true()), else_=deliveries.c.next_attempt_at <= now))


PAIR_LOCK = "hashtext(current_schema() || '/' || :provider), hashtext({subject})"
"""The advisory lock key of a subject × provider pair (PostgreSQL), keyed by schema too: advisory locks
are database-wide, and two gateways (or test sessions) in schemas of one database must not pass over
each other's pairs."""
STATUSES = {status.value: status for status in DeliveryStatus}
CANDIDATE = (
    deliveries.c.id,
    deliveries.c.subject_id,
    deliveries.c.status,
    deliveries.c.reschedules,
    deliveries.c.next_attempt_at,
    deliveries.c.created_at,
    deliveries.c.recheck,
)
Candidate = Row[Any, Any, Any, Any, Any, Any, Any]  # a CANDIDATE row
ABANDONED = "gave up: the outcome of its attempts was never recorded (the worker stopped or the store failed)"


@dataclass(frozen=True)
class Claim:
    """A delivery leased to one worker until its lease runs out."""

    id: str
    subject_id: str
    provider: str
    reschedules: int
    lease: str | None = None  # this claim's lease id: its outcome counts only while the lease holds
    abandoned: bool = False  # its lease ran out once too often: marked dead by the claim itself
    lost: bool = False  # taken over from a worker whose lease ran out unrecorded: a request of its may still land

    @property
    def pair(self) -> tuple[str, str]:
        return (self.provider, self.subject_id)


@dataclass(frozen=True)
class Attempt:
    """One request tried at a provider, for the dead-letter record."""

    started_at: datetime
    duration_ms: int
    outcome: str  # succeeded | transient | permanent
    status_code: int | None = None
    error: str | None = None
    worker: str | None = None  # host:pid of the worker that made it


@dataclass(frozen=True)
class Outcome:
    """How a claimed delivery ended, as the worker reports it."""

    status: DeliveryStatus
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    status_code: int | None = None
    next_attempt_at: datetime | None = None
    rescheduled: bool = False
    exhausted: bool = False  # dead because the retry ladder ran out, not because the provider refused


@dataclass(frozen=True)
class Ended:
    """How a claimed delivery ended, to be recorded: its outcome, on success what the provider holds
    now, what each push request set there (the gateway's own writes: ``gateway.rules.provenance``) and
    the pair's fence when the push read what the provider held."""

    claim: Claim
    outcome: Outcome
    ack: Ack | None = None
    sent: Sequence[Mapping[str, Write]] = ()
    fence: int = 0
    recheck_at: datetime | None = None  # what the provider will hold is unsure: push the pair again then


@dataclass(frozen=True)
class Held:
    """What the gateway knows a provider holds for a subject: the projection it last acknowledged, the
    ids and revisions remembered for the next push, and the gateway's own writes since."""

    acknowledged: Projection = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)
    writes: Provenance = field(default_factory=Provenance)
    fence: int = 0  # moved by a lapsed lease's push: an acknowledgement under an older fence is not trusted


@dataclass(frozen=True)
class Page:
    items: list[DeliveryOut]
    next_cursor: str | None


class Outbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def claim(
        self, provider: str, limit: int, now: datetime, lease_s: float, *, ladder_steps: int
    ) -> list[Claim]:
        """Lease up to ``limit`` due deliveries of one provider, expired leases included.

        A subject×provider pair with a delivery in flight is passed over, so two pushes
        for one subject never race at a provider. Claimers never wait on each other: rows
        another claimer (or a recording transaction) holds are skipped, and on PostgreSQL
        each pair is held with a transaction-scoped advisory lock while the in-flight check
        is made again in a fresh statement, so two workers can't both claim rows of one pair.
        (SQLite has one writer at a time: its claims are serial anyway.)

        One batch holds at most one row of a pair (its first due): the worker pushes a batch
        concurrently, and a lapsed ``sending`` row beside a newer pending one would otherwise race.

        A lease that ran out means the attempt's outcome was never recorded (the worker died,
        or the store failed it): that counts as a step on the retry ladder, so a delivery
        that keeps failing outside the provider call still ends ``dead`` (``abandoned``)
        instead of being claimed again forever.

        Each claim gets a lease id of its own (``Claim.lease``): ``renew`` and ``finish`` act only
        under it, so a worker whose lease lapsed can't extend or decide the claim another holds now.
        """
        in_flight = _in_flight(now)

        async def leasing(conn: Executor) -> list[Claim]:
            found = _one_per_pair(await _candidates(conn, provider, limit, now))
            if conn.dialect.name == "postgresql":
                held = await _lock_pairs(conn, provider, {row.subject_id for row in found})
                found = [row for row in found if row.subject_id in held]
            lost = {row.id for row in found if row.status == DeliveryStatus.sending.value}
            over = [row for row in found if row.id in lost and row.reschedules >= ladder_steps]
            if over:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_([row.id for row in over]))
                    .values(status=DeliveryStatus.dead.value, last_error=ABANDONED, lease_until=None, updated_at=now)
                )
                await stale.mark(conn, [row.subject_id for row in over])
            claims = [Claim(row.id, row.subject_id, provider, row.reschedules, abandoned=True) for row in over]
            live = [row.id for row in found if row not in over]
            if not live:
                return claims
            lease = str(uuid.uuid4())
            leased = await conn.execute(  # a new statement: sees a pair claimed since the select
                update(deliveries)
                .where(deliveries.c.id.in_(live), ~in_flight)
                .values(
                    status=DeliveryStatus.sending.value,
                    reschedules=deliveries.c.reschedules + case((deliveries.c.id.in_(lost), 1), else_=0),
                    lease_until=now + timedelta(seconds=lease_s),
                    lease_id=lease,
                    updated_at=now,
                )
                .returning(deliveries.c.id, deliveries.c.subject_id, deliveries.c.provider, deliveries.c.reschedules)
            )
            taken = [
                Claim(row.id, row.subject_id, provider, row.reschedules, lease, lost=row.id in lost) for row in leased
            ]
            rechecks = {row.id for row in found if row.recheck}
            await _distrust(conn, provider, [claim.subject_id for claim in taken if claim.lost or claim.id in rechecks])
            return claims + taken

        return await transaction(self.engine, leasing)

    async def renew(self, claim: Claim, now: datetime, lease_s: float) -> bool:
        """Extend a lease still held, so a slow push is never claimed a second time meanwhile. False
        once it lapsed: the pair may have been claimed again, and the push's outcome will not count."""
        return claim.id in await self.renew_all([claim], now, lease_s)

    async def renew_all(self, claims: Sequence[Claim], now: datetime, lease_s: float) -> set[str]:
        """``renew`` for several claims in one statement (a bulk group's); the ids whose lease still held."""
        if not claims:
            return set()
        renewal = (
            update(deliveries)
            .where(leased(claims, now))
            .values(lease_until=now + timedelta(seconds=lease_s))
            .returning(deliveries.c.id)
        )

        async def renew(conn: Executor) -> set[str]:
            return {row[0] for row in await conn.execute(renewal)}

        return await transaction(self.engine, renew)

    async def acknowledged(self, subject_id: str, provider: str) -> Held:
        """What the provider last accepted for this subject, the ids/revisions remembered, and the
        gateway's writes since."""
        return (await self.held(provider, [subject_id])).get(subject_id, Held())

    async def held(self, provider: str, subject_ids: Sequence[str]) -> dict[str, Held]:
        """``acknowledged`` for several subjects in one statement (a claimed group); those not listed
        were never acknowledged."""
        table = provider_state
        columns = (table.c.subject_id, table.c.acknowledged, table.c.memo, table.c.writes, table.c.fence)
        query = select(*columns).where(table.c.provider == provider, table.c.subject_id.in_(subject_ids))

        async def rows(conn: Executor) -> dict[str, Held]:
            found = (await conn.execute(query)).all()
            return {row[0]: Held(row[1], row[2], Provenance.from_json(row[3]), row[4]) for row in found}

        return await read(self.engine, rows)

    async def finish(
        self,
        claim: Claim,
        outcome: Outcome,
        now: datetime,
        ack: Ack | None = None,
        *,
        sent: Sequence[Mapping[str, Write]] = (),
        fence: int = 0,
    ) -> bool:
        """Record how one claimed delivery ended (``finish_many`` of one); whether the outcome counted."""
        return (await self.finish_many([Ended(claim, outcome, ack, sent, fence)], now))[0]

    async def finish_many(self, ended: Sequence[Ended], now: datetime) -> list[bool]:
        """Record how claimed deliveries ended, in one transaction (the worker's group commit): every
        attempt, on success what the provider holds, and the gateway's own writes there. Whether each
        outcome counted, in order.

        An outcome counts only while the claim's lease holds. Once it lapsed, the pair may have been
        claimed again and pushed meanwhile, and this push may have landed last with an older state:
        what the provider holds is then unknown, the pair's fence moves (so the other push's
        acknowledgement, read under the old fence, is not trusted either) and the pair is queued
        again, so its newest state is pushed after both. Pairs are taken in one order (PostgreSQL
        locks each pair), so two groups never wait on each other in a circle."""
        order = sorted(range(len(ended)), key=lambda index: ended[index].claim.pair)

        async def body(conn: Executor) -> list[bool]:
            await stale.mark(conn, [end.claim.subject_id for end in ended])
            counted: dict[int, bool] = {}
            for indices in _rounds(order, [end.claim.pair for end in ended]):
                counted |= zip(indices, await _finish(conn, [ended[index] for index in indices], now), strict=True)
            return [counted[index] for index in range(len(ended))]

        return await transaction(self.engine, body)

    # -- dead letters and the admin surface ------------------------------------------------

    async def get(self, delivery_id: str) -> DeliveryOut | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))).mappings().first()
            if row is None:
                return None
            attempts = await conn.execute(
                select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id == delivery_id)
                .order_by(delivery_attempts.c.id)
            )
            return delivery_out(row, [AttemptOut.model_validate(dict(a)) for a in attempts.mappings()])

    async def providers(self) -> list[str]:
        """Every provider that has deliveries here."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(select(deliveries.c.provider).distinct().order_by(deliveries.c.provider))
            return [row[0] for row in rows]

    async def list(
        self,
        *,
        provider: str | None = None,
        status: DeliveryStatus | None = None,
        subject_id: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Newest first, filtered; ``cursor`` continues where the previous page ended."""
        query = select(deliveries).order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc()).limit(limit + 1)
        for column, value in (
            (deliveries.c.provider, provider),
            (deliveries.c.status, status.value if status else None),
            (deliveries.c.subject_id, subject_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(deliveries.c.created_at >= since)
        if cursor is not None:
            created_at, delivery_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    deliveries.c.created_at < created_at,
                    and_(deliveries.c.created_at == created_at, deliveries.c.id < delivery_id),
                )
            )
        async with self.reader.connect() as conn:
            rows = list((await conn.execute(query)).mappings())
        items = [delivery_out(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1]) if more else None)

    async def replay(
        self,
        now: datetime,
        *,
        delivery_id: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """Put dead deliveries back in the queue (one by id, or all of a provider since a time).

        The worker sends the subject's newest state when it gets to them, never the stale payload.
        """
        query = update(deliveries).where(deliveries.c.status == DeliveryStatus.dead.value)
        if delivery_id is not None:
            query = query.where(deliveries.c.id == delivery_id)
        if provider is not None:
            query = query.where(deliveries.c.provider == provider)
        if since is not None:
            query = query.where(deliveries.c.updated_at >= since)
        again = {"status": DeliveryStatus.pending.value, "reschedules": 0, "next_attempt_at": now, "updated_at": now}
        async with self.engine.begin() as conn:
            replayed = [row[0] for row in await conn.execute(query.values(again).returning(deliveries.c.subject_id))]
            await stale.mark(conn, replayed)
            return len(replayed)

    async def retry_now(self, delivery_id: str, now: datetime) -> bool:
        """Make a waiting (pending or retrying) delivery due now; False when it is not waiting."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, WAITING)
                .values(next_attempt_at=now, updated_at=now)
            )
            return bool(result.rowcount)

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        """Per provider: deliveries due now, and the age in seconds of the oldest of them."""
        query = (
            select(deliveries.c.provider, func.count(), func.min(deliveries.c.next_attempt_at))
            .where(WAITING, deliveries.c.next_attempt_at <= now)
            .group_by(deliveries.c.provider)
        )
        async with self.reader.connect() as conn:
            rows = await conn.execute(query)
            return {name: (int(count), _age(now, oldest)) for name, count, oldest in rows}


async def _finish(conn: Executor, ended: Sequence[Ended], now: datetime) -> list[bool]:
    """Deliveries' ends, each pair at most once (``Outbox.finish_many``); whether each counted. An
    acknowledgement is trusted only from a push whose lease held and that is sure what it left at the
    provider. Statements go for all of them at once, built once: per delivery they cost more to build
    than SQLite takes to run them."""
    for end in ended:
        await _hold_pair(conn, end.claim)
    held = await _still_leased(conn, [end.claim for end in ended], now)
    if finished := [_ended(end, now) for end in ended if end.claim.id in held]:
        await conn.execute(ENDED, finished)
    for end in ended:
        if end.claim.id not in held:
            tried = deliveries.c.attempts + len(end.outcome.attempts)
            await conn.execute(update(deliveries).where(deliveries.c.id == end.claim.id).values(attempts=tried))
            await _queue_again(conn, end.claim, now, touched=bool(end.outcome.attempts))
    if attempts := [{"delivery_id": end.claim.id, **a.__dict__} for end in ended for a in end.outcome.attempts]:
        await conn.execute(delivery_attempts.insert(), attempts)
    await _record_held(conn, [end for end in ended if end.ack is not None or end.outcome.attempts], held, now)
    for end in ended:
        if end.recheck_at is not None:
            await _queue_pair(conn, end.claim, now, end.recheck_at)
    return [end.claim.id in held for end in ended]


def _rounds(order: Sequence[int], pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    """The indices in ``order`` cut into rounds holding each pair at most once, a pair's ends in the order
    given: two ends of one pair in a group (a lapsed push and the one that took over) are recorded one
    after the other, the second reading what the first wrote."""
    rounds: list[list[int]] = []
    seen: dict[tuple[str, str], int] = {}
    for index in order:
        nth = seen[pairs[index]] = seen.get(pairs[index], -1) + 1
        if nth == len(rounds):
            rounds.append([])
        rounds[nth].append(index)
    return rounds


async def _still_leased(conn: Executor, claims: Sequence[Claim], now: datetime) -> set[str]:
    """The claims whose lease still holds (their rows locked until commit on PostgreSQL)."""
    query = select(deliveries.c.id).where(leased(claims, now)).with_for_update()
    return {row.id for row in await conn.execute(query)}


ENDED = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("ended_id"), deliveries.c.lease_id == bindparam("ended_lease"))
    .values(
        status=bindparam("ended_status"),
        attempts=deliveries.c.attempts + bindparam("ended_tried", type_=Integer),
        reschedules=deliveries.c.reschedules + bindparam("ended_rescheduled", type_=Integer),
        last_error=bindparam("ended_error"),
        last_status_code=bindparam("ended_status_code"),
        next_attempt_at=bindparam("ended_next", type_=deliveries.c.next_attempt_at.type),
        lease_until=None,
        lease_id=None,
        updated_at=bindparam("ended_at", type_=deliveries.c.updated_at.type),
    )
)
"""A leased delivery's end (one row of :func:`_ended` each), built once."""


def _ended(end: Ended, now: datetime) -> dict[str, Any]:
    outcome = end.outcome
    return {
        "ended_id": end.claim.id,
        "ended_lease": end.claim.lease,
        "ended_status": outcome.status.value,
        "ended_tried": len(outcome.attempts),
        "ended_rescheduled": int(outcome.rescheduled),
        "ended_error": outcome.error,
        "ended_status_code": outcome.status_code,
        "ended_next": outcome.next_attempt_at or now,
        "ended_at": now,
    }


async def _distrust(conn: Executor, provider: str, subject_ids: Sequence[str]) -> None:
    """What the provider holds for these subjects is unknown from now on (a request may still land): the
    next push sends everything, and an acknowledgement read before this is not trusted (the fence moves)."""
    if subject_ids:
        where = (provider_state.c.provider == provider) & provider_state.c.subject_id.in_(subject_ids)
        moved = {"acknowledged": {}, "fence": provider_state.c.fence + 1}
        await conn.execute(update(provider_state).where(where).values(moved))


def leased(claims: Sequence[Claim], now: datetime) -> Any:
    """The claims' rows whose lease, the one each was claimed with, still holds (found by id)."""
    return and_(
        rows_in((deliveries.c.id, deliveries.c.lease_id), [(claim.id, claim.lease) for claim in claims]),
        deliveries.c.status == DeliveryStatus.sending.value,
        deliveries.c.lease_until > now,
    )


async def _record_held(conn: Executor, ended: Sequence[Ended], held: set[str], now: datetime) -> None:
    """What the providers hold after these pushes (each pair once): the acknowledgement, if the push's
    lease held, it is sure what it left there and no lapsed push moved the pair's fence since it read
    what was held; otherwise unknown (the next push sends everything), with ids/revisions kept. The
    gateway's writes are added to those stored now, never to a copy read before the push: two pushes of
    one pair may end at once."""
    stored = await _stored_writes(conn, [end.claim.pair for end in ended])
    changes: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for end in ended:
        if (values := _held_after(end, end.claim.id in held, stored.get(end.claim.pair), now)) is None:
            continue
        if end.claim.pair in stored:
            pair = {"state_subject": end.claim.subject_id, "state_provider": end.claim.provider}
            changes.append({f"set_{name}": value for name, value in values.items()} | pair)
        else:
            pair = {"subject_id": end.claim.subject_id, "provider": end.claim.provider}
            added.append({"memo": {}, "acknowledged_at": now} | values | pair)
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}  # two: with an acknowledgement or without
    for row in changes:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for shape, rows in shapes.items():
        await conn.execute(_state_update(shape), rows)
    if added:
        await conn.execute(provider_state.insert(), added)


async def _stored_writes(conn: Executor, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    """The gateway's writes and the fence stored for these (provider, subject) pairs, locked until commit
    (PostgreSQL)."""
    if not pairs:
        return {}
    columns = (provider_state.c.provider, provider_state.c.subject_id, provider_state.c.writes, provider_state.c.fence)
    rows = await conn.execute(select(*columns).where(held_pairs(pairs)).with_for_update())
    return {(row[0], row[1]): (Provenance.from_json(row[2]), row[3]) for row in rows}


def held_pairs(pairs: Sequence[tuple[str, str]]) -> Any:
    """The provider_state rows of these (provider, subject) pairs, found by subject (the key's first column)."""
    return rows_in((provider_state.c.subject_id, provider_state.c.provider), [(s, p) for p, s in pairs])


Stored = tuple[Provenance, int]  # a pair's provider_state writes and fence


def _held_after(end: Ended, leased: bool, stored: Stored | None, now: datetime) -> dict[str, Any] | None:
    """The pair's new provider_state values after this push, or None when nothing changes."""
    writes, moved = stored or (Provenance(), 0)
    lapsed = not leased or end.recheck_at is not None  # unsure what the provider will hold
    ack = None if lapsed else end.ack
    trusted = ack if ack is not None and moved == end.fence else None
    failed = any(attempt.outcome != "succeeded" for attempt in end.outcome.attempts)
    if trusted is None and not (end.sent or failed or lapsed):
        return None
    after = writes.after_push(end.sent, acknowledged=trusted is not None) if end.sent else writes
    values: dict[str, Any] = {"acknowledged": {}, "writes": after.to_json(), "fence": moved + lapsed}
    if trusted is not None:
        values |= {"acknowledged": trusted.acknowledged, "memo": trusted.memo, "acknowledged_at": now}
    return values


@functools.cache
def _state_update(shape: tuple[str, ...]) -> Any:
    """An UPDATE of one pair's provider_state (``state_subject``, ``state_provider``) setting the columns
    ``shape`` names (``set_<column>``), built once per shape."""
    where = (provider_state.c.subject_id == bindparam("state_subject")) & (
        provider_state.c.provider == bindparam("state_provider")
    )
    columns = [name.removeprefix("set_") for name in shape if name.startswith("set_")]
    values = {name: bindparam(f"set_{name}", type_=provider_state.c[name].type) for name in columns}
    return update(provider_state).where(where).values(values)


async def _queue_again(conn: Executor, claim: Claim, now: datetime, *, touched: bool) -> None:
    """After an outcome that came too late to count: the claim's row back in the queue if no one
    claimed it since; else, if this push reached the provider (``touched``), another push of the
    pair queued behind the one now in flight (or the waiting one made due)."""
    again = {"status": DeliveryStatus.pending.value, "lease_until": None, "lease_id": None, "next_attempt_at": now}
    mine = and_(deliveries.c.id == claim.id, deliveries.c.lease_id == claim.lease)
    if (await conn.execute(update(deliveries).where(mine).values(again | {"updated_at": now}))).rowcount or not touched:
        return
    waiting = and_(deliveries.c.subject_id == claim.subject_id, deliveries.c.provider == claim.provider, joinable(now))
    if (await conn.execute(update(deliveries).where(waiting).values(next_attempt_at=now))).rowcount:
        return
    await _queue_pair(conn, claim, now, now, carried=True)  # carries the claim's decision, like the push it follows


async def _queue_pair(conn: Executor, claim: Claim, now: datetime, when: datetime, *, carried: bool = False) -> None:
    """A new push of the claim's pair, due ``when`` (later than now: a recheck, which pushes the whole
    state whatever is acknowledged by then). Its ``decision_id`` is the claim's; ``carried``: listed among
    that decision's deliveries too."""
    decision = select(deliveries.c.decision_id).where(deliveries.c.id == claim.id).scalar_subquery()
    fresh = new_id()
    row = {"id": fresh, "subject_id": claim.subject_id, "provider": claim.provider, "attempts": 0, "reschedules": 0}
    queued = {"status": DeliveryStatus.pending.value, "next_attempt_at": when, "created_at": now, "updated_at": now}
    await conn.execute(deliveries.insert().values(row | queued | {"decision_id": decision, "recheck": int(when > now)}))
    if carried:
        link = select(literal(fresh), decision)
        await conn.execute(delivery_decisions.insert().from_select(["delivery_id", "decision_id"], link))


async def _hold_pair(conn: Executor, claim: Claim) -> None:
    """PostgreSQL: wait for any other finish of the same pair (two pushes of one pair end at once only
    after a lease lapsed). SQLite has one writer at a time."""
    if conn.dialect.name == "postgresql":
        await conn.execute(HOLD_PAIR, {"provider": claim.provider, "subject": claim.subject_id})


HOLD_PAIR = text(f"SELECT pg_advisory_xact_lock({PAIR_LOCK.format(subject=':subject')})")


async def _lock_pairs(conn: Executor, provider: str, subject_ids: set[str]) -> set[str]:
    """The subjects whose (subject, provider) pair this transaction now holds; a pair another
    claimer holds is skipped, never waited for. Released at commit."""
    if not subject_ids:
        return set()
    query = text(
        "SELECT s FROM unnest(CAST(:subjects AS text[])) AS s"
        f" WHERE pg_try_advisory_xact_lock({PAIR_LOCK.format(subject='s')})"
    )
    rows = await conn.execute(query, {"subjects": sorted(subject_ids), "provider": provider})
    return {row[0] for row in rows}


def _age(now: datetime, oldest: Any) -> float:
    if oldest is None:
        return 0.0
    if isinstance(oldest, str):  # SQLite hands aggregates back untyped
        oldest = datetime.fromisoformat(oldest)
    moment: datetime = oldest if oldest.tzinfo is not None else oldest.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - moment).total_seconds())


def encode_cursor(last: DeliveryOut) -> str:
    return base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this service did not hand out."""
    created_at, _, delivery_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
    return parse_timestamp(created_at), delivery_id


def _in_flight(now: Any) -> Any:
    """The row's subject × provider pair has a delivery being pushed under a lease that holds."""
    return exists().where(
        OTHER.c.subject_id == deliveries.c.subject_id,
        OTHER.c.provider == deliveries.c.provider,
        OTHER.c.status == DeliveryStatus.sending.value,
        OTHER.c.lease_until > now,
    )


def _due_now(status: str) -> Any:
    """A provider's rows of one status that are due (``:provider``, ``:now``, ``:limit``), in due order,
    their pair not in flight: one index range cut at the limit, never a walk of delivered rows. Rows
    another claimer holds are skipped. Built once: a claim runs three of them, often."""
    now = bindparam("now", type_=deliveries.c.next_attempt_at.type)
    when = deliveries.c.lease_until if status == DeliveryStatus.sending.value else deliveries.c.next_attempt_at
    return (
        select(*CANDIDATE)
        .where(deliveries.c.provider == bindparam("provider"), deliveries.c.status == status, when <= now)
        .where(~_in_flight(now))
        .order_by(deliveries.c.next_attempt_at)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )


OTHER = deliveries.alias("other")
DUE_NOW = [_due_now(status.value) for status in (*JOINABLE, DeliveryStatus.sending)]


async def _candidates(conn: Executor, provider: str, limit: int, now: datetime) -> list[Candidate]:
    """The first ``limit`` due rows of a provider whose pair is not in flight, in due order: waiting
    ones due now and ``sending`` ones whose lease ran out; rechecks after every other due row (a pair's own
    push carries its decisions, a recheck only repeats the newest state, and may wait behind a backlog)."""
    found: list[Candidate] = []
    for query in DUE_NOW:
        found += (await conn.execute(query, {"provider": provider, "now": now, "limit": limit})).all()
    found.sort(key=lambda row: (row.recheck, row.next_attempt_at, row.created_at))
    return found[:limit]


def _one_per_pair(rows: Sequence[Candidate]) -> list[Candidate]:
    """The first row of each subject (one provider per claim), in the given order."""
    first: dict[str, Candidate] = {}
    for row in rows:
        first.setdefault(row.subject_id, row)
    return list(first.values())


def delivery_out(row: Mapping[Any, Any], attempts: list[AttemptOut] | None = None) -> DeliveryOut:
    """A stored delivery as the API shows it. Validated: pydantic's validator builds a model in half the
    time ``model_construct`` takes (it runs in Rust), and a group of decisions shows thousands."""
    status = STATUSES[row["status"]]
    return DeliveryOut.model_validate(
        {
            "id": row["id"],
            "decision_id": row["decision_id"],
            "subject_id": row["subject_id"],
            "provider": row["provider"],
            "status": status,
            "attempts": row["attempts"],
            "last_error": row["last_error"],
            "last_status_code": row["last_status_code"],
            "next_attempt_at": None if status.final else row["next_attempt_at"],
            "recheck": bool(row["recheck"]),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "attempt_log": attempts,
        }
    )

"""Provider events in the store (``provider_events``): each stored once by the provider's event id,
queued, claimed under a lease by a worker, and closed with what the gateway did with it.

An event is stored before the provider gets its 2xx and acted on after, so it is never lost between
the answer and its effect: a worker that dies mid-way leaves the lease to run out, and another takes
the event again. Acting on an event twice is harmless (the rules see their own adoption as in sync).
Once acted on, the event's content is cleared: it names an address, and only its id (to refuse a
redelivery) and its record's revision (so an older one never wins) are needed after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.base import ProviderEvent
from gateway.store.db import insert, reader
from gateway.store.tables import addresses, provider_events, subjects
from schemas.api import EventOut, EventStatus


@dataclass(frozen=True)
class Queued:
    """A claimed event: whose, and what it says."""

    provider: str
    event: ProviderEvent
    received_at: datetime
    attempts: int


class Events:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def receive(self, provider: str, events: Sequence[ProviderEvent], now: datetime) -> int:
        """Queue the events not stored before (by id); how many were new. One transaction: the
        provider's 2xx follows only once they are all durable."""
        added = 0
        async with self.engine.begin() as conn:
            for event in events:
                row = _queued(provider, event, now)
                done = await conn.execute(insert(conn, provider_events).values(row).on_conflict_do_nothing())
                added += done.rowcount
        return added

    async def claim(self, now: datetime, lease_s: float, limit: int) -> list[Queued]:
        """Lease the oldest queued events that are due (a lapsed lease makes one due again)."""
        table = provider_events
        due = (table.c.status == EventStatus.queued.value) & (table.c.not_before <= now)
        pick = select(table.c.provider, table.c.event_id).where(due).order_by(table.c.received_at).limit(limit)
        async with self.engine.begin() as conn:
            picked = (await conn.execute(pick.with_for_update(skip_locked=True))).all()
            if not picked:
                return []
            claimed = []
            for provider, event_id in picked:
                leased = (
                    update(table)
                    .where(table.c.provider == provider, table.c.event_id == event_id, due)
                    .values(not_before=now + timedelta(seconds=lease_s), attempts=table.c.attempts + 1)
                    .returning(table.c.event, table.c.received_at, table.c.attempts)
                )
                row = (await conn.execute(leased)).mappings().first()
                if row is not None:
                    event = ProviderEvent.model_validate(row["event"])
                    claimed.append(Queued(provider, event, row["received_at"], row["attempts"]))
        return claimed

    async def newest_version(self, provider: str, entity_id: str) -> int | None:
        """The newest revision of a record that an event already brought (acted on or not)."""
        table = provider_events
        query = select(func.max(table.c.version)).where(
            table.c.provider == provider, table.c.entity_id == entity_id, table.c.status != EventStatus.queued.value
        )
        async with self.reader.connect() as conn:
            found: int | None = (await conn.execute(query)).scalar_one_or_none()
        return found

    async def later(self, provider: str, event_id: str, when: datetime) -> None:
        """Leave an event queued until ``when`` (a push to that provider is under way for its subject)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(provider_events)
                .where(provider_events.c.provider == provider, provider_events.c.event_id == event_id)
                .values(not_before=when)
            )

    async def close(self, provider: str, event_id: str, status: EventStatus, outcome: str, now: datetime) -> None:
        """Record what the gateway did with an event, and forget what it said."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(provider_events)
                .where(provider_events.c.provider == provider, provider_events.c.event_id == event_id)
                .values(status=status.value, outcome=outcome, processed_at=now, event=None)
            )

    async def recent(self, provider: str, limit: int) -> list[EventOut]:
        """A provider's newest events first, as the API shows them (no contact data)."""
        table = provider_events
        query = select(table).where(table.c.provider == provider).order_by(table.c.received_at.desc()).limit(limit)
        async with self.reader.connect() as conn:
            return [event_out(row) for row in (await conn.execute(query)).mappings()]

    async def holders(self, kind: str, address: str) -> list[str]:
        """The live subjects holding an address now (those a provider's per-address consent is theirs)."""
        query = (
            select(addresses.c.subject_id)
            .join(subjects, subjects.c.id == addresses.c.subject_id)
            .where(addresses.c.kind == kind, addresses.c.address == address, addresses.c.current == 1)
            .where(subjects.c.erased_at.is_(None))
            .order_by(addresses.c.subject_id)
        )
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).scalars())


def _queued(provider: str, event: ProviderEvent, now: datetime) -> dict[str, Any]:
    return {
        "provider": provider,
        "event_id": event.id,
        "entity_id": event.entity_id,
        "version": event.version,
        "status": EventStatus.queued.value,
        "event": event.model_dump(mode="json"),
        "attempts": 0,
        "received_at": now,
        "not_before": now,
    }


def event_out(row: Mapping[Any, Any]) -> EventOut:
    return EventOut(
        provider=row["provider"],
        id=row["event_id"],
        entity_id=row["entity_id"],
        version=row["version"],
        status=EventStatus(row["status"]),
        outcome=row["outcome"],
        attempts=row["attempts"],
        received_at=row["received_at"],
        processed_at=row["processed_at"],
    )

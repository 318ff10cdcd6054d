"""The schema: an append-only ledger, merged subject state, the outbox and provider state."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite would otherwise hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any]:
        """In UTC; SQLite as the dialect's own text format (written here in one C call, not its
        chain of processors: a group of decisions binds thousands of timestamps)."""
        return _sqlite_text if dialect.name == "sqlite" else _aware_utc

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], datetime | None]:
        """SQLite's stored text parsed by ``fromisoformat`` (C, several times faster than the
        dialect's regex: the drift view reads several timestamps per subject), taken as UTC."""
        return _sqlite_utc if dialect.name == "sqlite" else _aware_utc


def _sqlite_utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value + "+00:00")  # 5x faster than .replace


@functools.lru_cache(maxsize=256)
def _sqlite_text(value: datetime | None) -> str | None:
    """Text such as ``2026-11-23 12:00:00.000000``, the format SQLAlchemy's SQLite DATETIME stores,
    so text order is time order. Cached: a group's rows carry its one ``now`` many times over, and
    ``isoformat`` is most of the cost of binding them (equal instants in other zones give the same
    text, so sharing it is right)."""
    return None if value is None else value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def _aware_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _timestamp(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, UTCDateTime(), nullable=nullable)


decisions = Table(
    "decisions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # receive order
    Column("id", String(36), nullable=False, unique=True),
    Column("subject_id", String(200), nullable=False),
    _timestamp("occurred_at"),
    _timestamp("received_at"),
    Column("body", JSON, nullable=False),  # the decision as accepted, normalized
    Column("effective", JSON, nullable=False),  # purposes this decision set (newest at the time)
    Column("superseded", JSON, nullable=False),  # purposes a newer decision already held
    Index("ix_decisions_subject", "subject_id", "seq"),
)

subjects = Table(
    "subjects",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("email", String(320)),
    Column("phone", String(20)),
    Column("tcf_string", Text),
    Column("vendors", JSON, nullable=False, default=dict),
    _timestamp("expires_at", nullable=True),
    Column("source", String(60), nullable=False),
    Column("note", Text),
    _timestamp("occurred_at"),  # newest decision seen: owns the subject-level fields
    _timestamp("updated_at"),
    _timestamp("erased_at", nullable=True),  # a tombstone: personal data removed, later decisions refused
)

subject_purposes = Table(
    "subject_purposes",
    metadata,
    Column("subject_id", String(200), ForeignKey("subjects.id"), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    _timestamp("occurred_at"),
    Column("decision_id", String(36), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("decision_id", String(36), ForeignKey("decisions.id"), nullable=False),
    Column("subject_id", String(200), nullable=False),
    Column("provider", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),  # requests tried at the provider, in all
    Column("reschedules", Integer, nullable=False, default=0),  # steps taken on the retry ladder
    Column("last_error", Text),
    Column("last_status_code", Integer),
    _timestamp("next_attempt_at"),
    _timestamp("lease_until", nullable=True),
    Column("lease_id", String(36)),  # this claim's own: an outcome counts only under the lease it was claimed with
    Column("recheck", Integer, nullable=False, default=0, server_default="0"),  # 1: push all, whatever was acknowledged
    _timestamp("created_at"),
    _timestamp("updated_at"),
    Index("ix_deliveries_due", "provider", "status", "next_attempt_at"),
    Index("ix_deliveries_pair", "subject_id", "provider", "status"),
    Index("ix_deliveries_decision", "decision_id"),
)

delivery_decisions = Table(
    "delivery_decisions",  # coalescing: the decisions one delivery carries
    metadata,
    Column("delivery_id", String(36), ForeignKey("deliveries.id"), primary_key=True),
    Column("decision_id", String(36), ForeignKey("decisions.id"), primary_key=True),
    Index("ix_delivery_decisions_decision", "decision_id"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), ForeignKey("deliveries.id"), nullable=False),
    _timestamp("started_at"),
    Column("duration_ms", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),  # succeeded | transient | permanent
    Column("status_code", Integer),
    Column("error", Text),
    Column("worker", String(100)),  # host:pid of the worker process that made the attempt
    Index("ix_delivery_attempts_delivery", "delivery_id", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(100), primary_key=True),  # the token's name: keys are per client
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response_status", Integer),  # null while the first request is still running
    Column("response_body", JSON),
    _timestamp("created_at"),
    _timestamp("expires_at"),
    Index("ix_idempotency_expiry", "expires_at"),
)

idempotent_decisions = Table(
    "idempotent_decisions",  # the decision each item of a keyed request recorded: written with it
    metadata,
    Column("scope", String(100), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("item", Integer, primary_key=True),  # 0 for POST /v1/consents, the index in a batch
    Column("decision_id", String(36), nullable=False),
    _timestamp("expires_at"),  # the key's own expiry
    Index("ix_idempotent_decisions_expiry", "expires_at"),
)

provider_state = Table(
    "provider_state",
    metadata,
    Column("subject_id", String(200), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("acknowledged", JSON, nullable=False),
    Column("memo", JSON, nullable=False),
    _timestamp("acknowledged_at"),
    # provenance: per term, the gateway's writes (state, provider time) since its last acknowledged one
    Column("writes", JSON, nullable=False, default=dict),
    # moved by a push whose lease lapsed: an acknowledgement read before it may hide that push's write
    Column("fence", Integer, nullable=False, default=0, server_default="0"),
)

addresses = Table(
    "addresses",  # the subjects' emails (lower case) and phones: who shares one, and the ones they left
    metadata,
    Column("subject_id", String(200), primary_key=True),
    Column("kind", String(8), primary_key=True),  # email | phone
    Column("address", String(320), primary_key=True),
    Column("current", Integer, nullable=False),  # 1: the subject's address now; 0: one it held before
    _timestamp("replaced_at", nullable=True),  # when a decision replaced it (former addresses)
    Index("ix_addresses_address", "address", "current"),
)

address_company = Table(
    "address_company",  # per address, when the subjects holding it last changed (one joined, left or was erased)
    metadata,
    Column("address", String(320), primary_key=True),
    _timestamp("changed_at"),  # the gateway's clock: a provider time before it may be another subject's
)

provider_budgets = Table(
    "provider_budgets",  # PostgreSQL only: the request schedule every worker of a deployment shares
    metadata,
    Column("provider", String(40), primary_key=True),
    _timestamp("next_slot"),
)

token_budgets = Table(
    "token_budgets",  # PostgreSQL only: each API token's request schedule, shared by every API process
    metadata,
    Column("token", String(120), primary_key=True),  # a token's name, or "<name>#decisions"
    _timestamp("next_slot"),
)

observations = Table(
    "observations",  # what each provider was last found to hold for a subject (read-back)
    metadata,
    Column("subject_id", String(200), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("held", JSON),  # in the adapter's projection terms; null: never read successfully
    Column("changed_at", JSON),  # per term: when the provider says it last changed
    _timestamp("observed_at", nullable=True),
    Column("run_id", String(36)),
    Column("error", Text),  # why the last read failed; null when it succeeded
    _timestamp("error_at", nullable=True),
)

reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("providers", JSON, nullable=False),
    Column("subjects", JSON),  # null: every subject
    Column("scheduled", Integer, nullable=False, default=0),  # 1: started by the schedule
    Column("cursor", String(200)),  # the last subject id done: a run resumes after it
    Column("counts", JSON, nullable=False),
    Column("error", Text),
    _timestamp("created_at"),
    _timestamp("started_at", nullable=True),
    _timestamp("finished_at", nullable=True),
    _timestamp("lease_until", nullable=True),
    Index("ix_reconciliation_runs_status", "status", "created_at"),
)

provider_events = Table(
    "provider_events",  # changes providers announced (webhooks): each stored once, acted on after the answer
    metadata,
    Column("provider", String(40), primary_key=True),
    Column("event_id", String(200), primary_key=True),  # the provider's event id: a redelivery is the same row
    Column("entity_id", String(200), nullable=False),  # the provider's record it is about
    Column("version", Integer),  # the record's revision at the provider, if it has one
    Column("status", String(16), nullable=False),  # queued | applied | ignored | reported
    Column("event", JSON),  # the verified event; cleared once acted on (it names an address)
    Column("outcome", Text),  # what the gateway did with it, naming no contact data
    Column("attempts", Integer, nullable=False, default=0),
    _timestamp("received_at"),
    _timestamp("not_before"),  # queued: when it may be claimed (a lease, or a wait for a push under way)
    _timestamp("processed_at", nullable=True),
    Index("ix_provider_events_queue", "status", "not_before"),
    Index("ix_provider_events_entity", "provider", "entity_id", "version"),
)

expiries = Table(
    "expiries",  # a decision whose purposes turn denied at expires_at, unless newer ones replaced them
    metadata,
    Column("decision_id", String(36), primary_key=True),
    Column("subject_id", String(200), nullable=False),
    _timestamp("due_at"),
    Index("ix_expiries_due", "due_at"),
)

erasures = Table(
    "erasures",  # the audit of every erasure: who asked, when, and when the providers and the store were done
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subject_id", String(200), nullable=False),
    Column("decision_id", String(36), nullable=False),  # the ledger entry that queued the removals
    Column("requested_by", String(100), nullable=False),
    Column("status", String(16), nullable=False),  # pending | done
    _timestamp("requested_at"),
    _timestamp("completed_at", nullable=True),
    Index("ix_erasures_subject", "subject_id"),
    Index("ix_erasures_status", "status"),
)

admin_sessions = Table(
    "admin_sessions",  # the admin page's signed-in sessions: the cookie holds only the id
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the cookie's session id
    Column("token_sha256", String(64), nullable=False),  # the token that opened it: removed, the session ends
    _timestamp("created_at"),
    _timestamp("expires_at"),
    Index("ix_admin_sessions_expiry", "expires_at"),
)

UNFINISHED = ("queued", "running")  # a backfill of a provider asked for again meanwhile joins it

backfills = Table(
    "backfills",  # every subject's state pushed to one provider again, chunk by chunk, resumable
    metadata,
    Column("id", String(36), primary_key=True),
    Column("provider", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("cursor", String(200)),  # the last subject id enqueued: a resumed backfill goes on after it
    Column("counts", JSON, nullable=False),  # subjects (when it started), enqueued, nothing (mapped nothing there)
    Column("error", Text),
    _timestamp("created_at"),
    _timestamp("started_at", nullable=True),
    _timestamp("finished_at", nullable=True),
    _timestamp("lease_until", nullable=True),
    Column("lease_owner", String(36)),  # the driver holding it: it alone enqueues, the others wait for the lease
    Index(
        "ux_backfills_unfinished",
        "provider",
        unique=True,
        sqlite_where=Column("status").in_(UNFINISHED),
        postgresql_where=Column("status").in_(UNFINISHED),
    ),
)

backfill_items = Table(
    "backfill_items",  # the delivery each subject of a backfill rides on: its outcome is the receipt's
    metadata,
    Column("backfill_id", String(36), ForeignKey("backfills.id"), primary_key=True),
    Column("subject_id", String(200), primary_key=True),
    Column("delivery_id", String(36), ForeignKey("deliveries.id"), nullable=False),
    Index("ix_backfill_items_delivery", "delivery_id"),
)

reconciliation_rows = Table(
    "reconciliation_rows",  # the drift view's rows, materialized: each subject × provider's status
    metadata,
    Column("subject_id", String(200), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("status", String(16), nullable=False),
    _timestamp("acknowledged_at", nullable=True),
    _timestamp("observed_at", nullable=True),
    _timestamp("refreshed_at"),  # when the row was last computed
    Index("ix_reconciliation_rows_status", "status", "subject_id", "provider"),
    Index("ix_reconciliation_rows_provider", "provider", "status", "subject_id"),
)

reconciliation_stale = Table(
    "reconciliation_stale",  # a mark per change to a subject's rows' inputs, written with the change
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(200), nullable=False),
    Index("ix_reconciliation_stale_subject", "subject_id"),
)

reconciliation_providers = Table(
    "reconciliation_providers",  # the provider settings the stored rows were computed with
    metadata,
    Column("provider", String(40), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
)

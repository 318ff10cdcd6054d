"""Response bodies of the gateway's HTTP API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from schemas.consent import Decision, FreeText, SubjectId, SubjectState
from schemas.problem import Problem


class DeliveryStatus(StrEnum):
    pending = "pending"
    sending = "sending"
    retrying = "retrying"
    succeeded = "succeeded"
    dead = "dead"  # failed for good; last_error says why
    skipped = "skipped"  # nothing to send

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def under_way(self) -> bool:
        return self in UNDER_WAY


FINAL_STATUSES = frozenset({DeliveryStatus.succeeded, DeliveryStatus.dead, DeliveryStatus.skipped})
UNDER_WAY = frozenset({DeliveryStatus.pending, DeliveryStatus.retrying, DeliveryStatus.sending})
"""A push is owed or in flight: what the provider holds is about to change. The one definition the
outbox, the drift view, read-back runs and the admin page share."""


class AttemptOut(BaseModel):
    started_at: datetime
    duration_ms: int
    outcome: str = Field(description="succeeded, transient or permanent")
    status_code: int | None = None
    error: str | None = None
    worker: str | None = Field(default=None, description="the worker process (host:pid) that made it")


class DeliveryOut(BaseModel):
    id: str
    decision_id: str
    subject_id: str
    provider: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None = Field(
        default=None, description="why the last failed attempt failed; none once it succeeded"
    )
    last_status_code: int | None = Field(
        default=None, description="the provider's HTTP status on the last failed attempt; none once it succeeded"
    )
    next_attempt_at: datetime | None = None
    recheck: bool = Field(
        default=False,
        description="pushes the whole state again once a request an earlier push left unanswered can no "
        "longer land (due twice the provider's timeout after it); not among its decision's deliveries",
    )
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptOut] | None = Field(
        default=None, description="every attempt (time, status, duration); on GET /v1/deliveries/{id}"
    )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class DecisionOut(BaseModel):
    id: str
    subject_id: str
    received_at: datetime
    decision: Decision
    effective_purposes: list[str] = Field(description="purposes this decision set; it was the newest for them")
    superseded_purposes: list[str] = Field(description="purposes a newer decision already held: unchanged")
    deliveries: list[DeliveryOut]


class HistoryOut(BaseModel):
    items: list[DecisionOut] = Field(description="the subject's decisions, newest received first")


MAX_BATCH = 1000
PROVIDERS: JsonDict = {"x-vocabulary": "providers"}  # replaced by the configured names: see gateway.openapi
READABLE: JsonDict = {"x-vocabulary": "readable"}


class BatchEnvelope(BaseModel):
    """A batch request as the endpoint takes it: a list of objects, each then validated as a
    Decision on its own, so one bad item is rejected in its result and the others recorded."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decisions: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="each a Decision (that schema); an object that is not a valid one is rejected in its own result",
    )


class BatchIn(BaseModel):
    """A batch whose every item is a valid decision: the one-pass check of the whole body."""

    decisions: list[Decision] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResult(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    decision: DecisionOut | None = None
    problem: Problem | None = None


class BatchOut(BaseModel):
    results: list[BatchResult] = Field(description="one per input decision, in input order")


class SyncStatus(StrEnum):
    in_sync = "in_sync"  # the provider holds what the gateway wants (read back, or acknowledged since)
    pending = "pending"  # a push is under way or owed
    failed = "failed"  # the last push died: see last_delivery
    diverged = "diverged"  # read back, the provider holds something else
    unobservable = "unobservable"  # no read API: acknowledged is all that is known


class TermDifference(BaseModel):
    term: str = Field(description="dotted path in the provider's terms, e.g. EMAIL.state, purposes.email_marketing")
    desired: Any = Field(description="what the gateway wants there (null: nothing)")
    held: Any = Field(description="what the provider holds or last acknowledged there (null: nothing)")


class ProviderSync(BaseModel):
    """One reconciliation row: a subject at one provider."""

    subject_id: str
    provider: str
    status: SyncStatus
    desired: dict[str, Any] = Field(description="the gateway's state in this provider's terms")
    acknowledged: dict[str, Any] | None = Field(description="what the provider last accepted")
    acknowledged_at: datetime | None = None
    observed: dict[str, Any] | None = Field(default=None, description="what a read-back last found there")
    observed_at: datetime | None = None
    observe_error: str | None = Field(default=None, description="why the last read-back of this row failed")
    difference: list[TermDifference] = Field(
        default_factory=list, description="desired vs the newest of observed and acknowledged, term by term"
    )
    not_applicable: dict[str, str] = Field(
        default_factory=dict, description="provider terms that cannot exist there for this subject, and why"
    )
    not_adopted: dict[str, str] = Field(
        default_factory=dict,
        description="terms a read-back found different that are not taken as the person's change there, and why",
    )
    shared_with: list[str] = Field(
        default_factory=list,
        description="other subjects holding one of this subject's addresses at this provider (Wix: one consent each)",
    )
    last_delivery: DeliveryOut | None = Field(
        default=None, description="the newest delivery that tried to push (skipped ones never hide it)"
    )


class ReconciliationPage(BaseModel):
    items: list[ProviderSync]
    counts: dict[SyncStatus, int] = Field(description="rows per status over every page of this filter (status aside)")
    provider_counts: dict[str, dict[SyncStatus, int]] = Field(description="the same counts, per provider")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    providers: list[str] | None = Field(
        default=None, min_length=1, description="default: every readable provider", json_schema_extra=READABLE
    )
    subjects: list[SubjectId] | None = Field(default=None, min_length=1, max_length=10_000, description="default: all")


class RunOut(BaseModel):
    id: str
    status: RunStatus
    providers: list[str]
    subjects: list[str] | None
    scheduled: bool
    counts: dict[str, Any] = Field(description="subjects done; per provider rows read, failed to read, diverged")
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class EventStatus(StrEnum):
    """What became of a provider event: ``queued`` until a worker acts on it; ``applied`` when the rules
    ran on it (adopted, pushed again, or found it in sync); ``ignored`` when it changes nothing (older than
    one already seen, the gateway's own write, nobody holds that address); ``reported`` for a deletion or
    an anonymization there, which the gateway shows and never adopts."""

    queued = "queued"
    applied = "applied"
    ignored = "ignored"
    reported = "reported"


class EventOut(BaseModel):
    provider: str
    id: str = Field(description="the provider's event id: a redelivery of it is acknowledged and not stored again")
    entity_id: str = Field(description="the provider's record the event is about (a Wix consent id)")
    version: int | None = Field(description="the record's revision at the provider, when it has one")
    status: EventStatus
    outcome: str | None = Field(description="what the gateway did with it (no contact data)")
    attempts: int
    received_at: datetime
    processed_at: datetime | None


class EventsReceived(BaseModel):
    received: int = Field(description="events stored by this request")
    duplicates: int = Field(description="events of this request stored before (a redelivery): not stored again")


class EventPage(BaseModel):
    items: list[EventOut]


class RepushIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    providers: list[str] | None = Field(
        default=None, min_length=1, description="default: every provider", json_schema_extra=PROVIDERS
    )
    note: FreeText | None = Field(default=None, max_length=1000)


FAILURES_SHOWN = 1000  # a backfill's failed subjects listed in its answer; the count of them is whole


class BackfillIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    dry_run: bool = Field(default=False, description="only count what would be pushed; nothing changes")


class BackfillPreview(BaseModel):
    """What a backfill of the provider would push now (a dry run: nothing was changed)."""

    provider: str
    dry_run: Literal[True] = True
    subjects: int = Field(description="live subjects (erased ones are skipped)")
    mapped: int = Field(description="subjects with something mapped at the provider: one push each")
    nothing: int = Field(description="subjects with nothing mapped there: nothing to push")


class BackfillFailure(BaseModel):
    """A subject whose push failed for good, and why (the provider's error text, secret-free)."""

    subject_id: str
    delivery_id: str
    error: str | None
    status_code: int | None


class BackfillOut(BaseModel):
    """A backfill: its progress (``cursor``: the last subject id enqueued) and, per outcome, how many of
    its subjects' pushes ended so (``pending``, ``retrying`` or ``sending`` while under way; ``nothing``:
    the subject maps nothing at the provider, so nothing was pushed)."""

    id: str
    provider: str
    status: RunStatus
    subjects: int = Field(description="live subjects when it started (the ones decided since are pushed too)")
    enqueued: int = Field(description="subjects whose push was queued")
    outcomes: dict[str, int]
    failures: list[BackfillFailure] = Field(description=f"the first {FAILURES_SHOWN} whose push died")
    cursor: str | None
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> int:
        """Subjects whose push is final, or who needed none."""
        return sum(count for outcome, count in self.outcomes.items() if outcome not in UNDER_WAY)


class SubjectOut(BaseModel):
    state: SubjectState
    providers: list[ProviderSync]


class Health(BaseModel):
    status: str


class ErasureStatus(StrEnum):
    pending = "pending"  # removals under way at the providers (a dead one waits for a replay)
    done = "done"  # every provider removed the person, and the store holds no personal data of theirs


class ErasureOut(BaseModel):
    """An erasure and its audit: who asked, when, and where each provider's removal stands."""

    id: str
    subject_id: str
    status: ErasureStatus
    requested_by: str = Field(description="the API token's name, or the CLI")
    requested_at: datetime
    completed_at: datetime | None = None
    deliveries: list[DeliveryOut] = Field(description="the removal at each provider")

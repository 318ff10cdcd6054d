"""The contract every provider adapter implements.

Adapters are sans-IO (like httpx's ``Auth.auth_flow``): a push is a generator that yields
``httpx.Request`` objects and receives the ``httpx.Response`` for each, so a provider that
needs several calls (Wix: look up, then PATCH with a revision) stays a pure, testable
function. Adapters never retry, sleep, read a clock or touch the store; secrets live only
in the ``httpx.Auth`` they hand to the dispatcher's client.
"""

from __future__ import annotations

import email.utils
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapters.errors import GatewayError, PermanentError, ProviderError, TransientError
from schemas.consent import PurposeRecord, PurposeState, SubjectState

Projection = dict[str, Any]
"""A subject's desired state in one provider's own terms; plain JSON, compared for changes."""

TRANSIENT_STATUSES = frozenset({408, 429})
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
DriftPolicy = Literal["newest_wins", "gateway_wins", "report_only"]
EXPECTED = "consent_gateway.expected_statuses"  # request extension: see json_request
WRITES = "consent_gateway.writes"  # request extension: see json_request
ITEM_WRITES = "consent_gateway.item_writes"  # request extension: see json_request

Write = tuple[PurposeState, datetime]
"""What a push request sets for one provider term: the state, and the provider time it carries."""


class Ack(BaseModel):
    """What a provider accepted: the projection now held there and what to remember."""

    model_config = ConfigDict(frozen=True)

    acknowledged: Projection
    memo: dict[str, Any] = Field(default_factory=dict)  # provider ids, revisions: fed to the next push


Flow = Generator[httpx.Request, httpx.Response, Ack]
BulkFlow = Generator[httpx.Request, httpx.Response, list[Ack | ProviderError]]
"""Pushes several subjects at once; answers each subject's own Ack or error, in input order."""


class Observation(BaseModel):
    """What a provider was found to hold for one subject, in the adapter's ``project()`` terms."""

    model_config = ConfigDict(frozen=True)

    held: Projection = Field(default_factory=dict)  # {}: the provider holds nothing for the subject
    changed_at: dict[str, datetime] = Field(default_factory=dict)  # per term: the provider's own time of it


ReadFlow = Generator[httpx.Request, httpx.Response, dict[str, Observation]]
"""Reads a batch of subjects back; answers an Observation per subject id of the batch."""
T = TypeVar("T")


class ProviderSettings(BaseModel):
    """Settings every provider has; an adapter subclasses this to add its own (and its secrets)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    base_url: str
    purposes: dict[str, str] = Field(description="gateway purpose -> the provider's own term")
    timeout_s: float = Field(default=10.0, gt=0)
    concurrency: int = Field(
        default=4, ge=1, le=256, description="requests in flight per worker process (twice as many leased ahead)"
    )
    rate_per_minute: float = Field(default=0.0, ge=0, description="request budget per minute; 0 = unlimited")
    drift_policy: DriftPolicy = Field(
        default="newest_wins", description="what a read-back that finds other state here does (see README)"
    )
    allow_http: bool = Field(
        default=False, description="plain http to a host other than loopback: simulators only, never a real provider"
    )
    max_response_bytes: int = Field(default=1_048_576, ge=1024, description="a longer answer is refused unread")

    @field_validator("base_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("https", "http") or not url.host:
            raise ValueError("must be an absolute https:// URL")
        return value

    @model_validator(mode="after")
    def _https(self) -> ProviderSettings:
        """Provider keys and contact data travel to this URL: in clear only over loopback."""
        url = httpx.URL(self.base_url)
        if url.scheme == "http" and not self.allow_http and url.host not in LOOPBACK:
            raise ValueError("base_url must be https:// (plain http only to loopback, or with allow_http = true)")
        return self


class Adapter(ABC):
    """One provider: translate a subject's merged state into its wire format and back."""

    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]]
    volatile: ClassVar[tuple[str, ...]] = ()  # request body fields carrying the decision's time (cassettes)
    record_stamped: ClassVar[bool] = False
    """The provider keeps one time for a subject's whole record (Masivo), not one per term: that time
    dates whichever term someone changed, not every term (see ``gateway.provenance``)."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    @abstractmethod
    def auth(self) -> httpx.Auth:
        """The only place this provider's secrets are used."""

    @abstractmethod
    def project(self, state: SubjectState) -> Projection:
        """The subject's state in this provider's terms; ``{}`` when nothing here is mapped."""

    def addressed(self) -> dict[str, str]:
        """Terms the provider keeps one consent for per address rather than per subject, and the subject
        field holding that address (Wix: ``{"EMAIL": "email", "PHONE": "phone"}``). Subjects sharing such
        an address share that consent: ``project`` gives it the most protective of their states."""
        return {}

    def not_applicable(self, state: SubjectState) -> dict[str, str]:
        """Parts of the projection that cannot exist at this provider for this subject, and why
        (a Wix EMAIL consent for a subject with no email). ``project`` leaves them out, so they
        are never pushed, never drift, and never block the parts that can apply."""
        return {}

    @abstractmethod
    def push(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> Flow:
        """Bring the provider from ``previous`` (last acknowledged) to ``project(state)``.

        Raises LocalValidationError before yielding anything when the provider's rules
        reject the push.
        """

    def erase(self, state: SubjectState, memo: Mapping[str, Any]) -> Flow:
        """Remove the person at the provider (an erasure). Without a delete API the removal is
        every mapped purpose denied, sent whole; an adapter whose provider can delete overrides this."""
        denied = PurposeRecord(state=PurposeState.denied, occurred_at=state.occurred_at)
        everything = state.model_copy(update={"purposes": dict.fromkeys(self.settings.purposes, denied)})
        return self.push(everything, {}, memo)

    def cautions(self) -> list[str]:
        """Settings that are valid but lose data at this provider, said at every start (a warning
        in the log), since nothing at run time shows it: the provider answers success."""
        return []

    def secrets(self) -> list[str]:
        """Secret values to scrub from anything recorded (errors, logs, cassettes)."""
        return [
            value.get_secret_value()
            for value in self.settings.__dict__.values()
            if hasattr(value, "get_secret_value") and value.get_secret_value()
        ]

    def term_states(self, projection: Projection) -> dict[str, PurposeState]:
        """Each term of a projection as a gateway purpose state (what adopting it would mean);
        terms with no such meaning are left out. Only observable providers need it."""
        return {}

    def error_text(self, response: httpx.Response) -> str:
        """The provider's own error text; providers override to pick their error body apart."""
        return response.text[:500] or response.reason_phrase

    def check(self, response: httpx.Response) -> None:
        """Raise the classified error for a failed response (Singer's rule: 408/429/5xx retry)."""
        status = response.status_code
        if status < 300:
            return
        if status < 400:  # never followed: a redirect from an API is a wrong base_url, not an answer
            raise PermanentError(self.name, "answered with a redirect, which is not followed: check base_url", status)
        message = self.error_text(response)
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientError(self.name, message, status, retry_after(response))
        raise PermanentError(self.name, message, status)


class Observable(ABC):
    """Mixed into an adapter whose provider can be read back. One without it has no read API:
    its rows are ``unobservable``, compared with what it acknowledged only."""

    read_batch: ClassVar[int]
    """How many subjects one read flow covers (Wix pages 100 at a time; Masivo reads one)."""

    @abstractmethod
    def read(self, states: Sequence[SubjectState]) -> ReadFlow:
        """A sans-IO flow reading what the provider holds for these subjects (≤ ``read_batch``)."""


class Bulk(ABC):
    """Mixed into an adapter whose provider takes several subjects' first syncs in one request (Wix's
    bulk upsert): a backlog of new subjects then costs a request per ``bulk_size`` items, not several
    per subject. Only first syncs go in bulk: a consent already known there keeps the adapter's own
    ``push`` (Wix: PATCH at the revision read), so a change someone made there is never overwritten blind."""

    @property
    @abstractmethod
    def bulk_size(self) -> int:
        """The most items one bulk request carries (a provider setting: the maximum may be undocumented)."""

    @abstractmethod
    def first_sync(self, state: SubjectState, previous: Projection, memo: Mapping[str, Any]) -> bool:
        """Whether this push is a first sync ``push_many`` may send: nothing acknowledged, no provider
        ids remembered, no former address to withdraw."""

    @abstractmethod
    def push_many(self, states: Sequence[SubjectState]) -> BulkFlow:
        """First syncs of several subjects, answering each its own ``Ack`` or error in input order: a
        LocalValidationError for a body our rules refuse, a PermanentError for an item the provider
        refused, a TransientError for one worth retrying. One subject's failure never stops another's.
        Each request names what it sets per subject (``json_request(item_writes=…)``); a request that
        failed whole after the worker's retries is thrown into the flow at its ``yield`` (see ``drive``)."""


class ProviderEvent(BaseModel):
    """One verified change a provider announced for one term, in the adapter's ``project()`` terms, so
    it goes through the same rules as a read-back's Observation of that term."""

    model_config = ConfigDict(frozen=True)

    id: str  # the provider's event id: an event is stored once
    entity_id: str  # the provider's record the event is about (a Wix consent)
    occurred_at: datetime  # when the provider says the event happened
    term: str | None = None  # None: the event does not say (a deletion without the entity)
    address: str | None = None  # for a term kept per address: the address, as ``addressed()`` fields hold it
    held: Projection = Field(default_factory=dict)  # the term as read back would hold it; {} for a deletion
    changed_at: datetime | None = None  # the provider's own time of the term's state (as ``Observation.changed_at``)
    version: int | None = None  # the record's revision at the provider: an older one never wins over a newer
    deleted: bool = False
    anonymized: bool = False  # done for a person's erasure request there: reported, never adopted

    @property
    def reportable_only(self) -> bool:
        """A deletion or an anonymization says nobody's decision: the gateway reports it and acts on nothing."""
        return self.deleted or self.anonymized


class Unverified(GatewayError):
    """A request to the events endpoint that cannot be shown to come from the provider (401, nothing recorded)."""


class UnreadableEvent(GatewayError):
    """A request that is the provider's own (verified) but not an event this gateway can read (400)."""


class EventSource(ABC):
    """Mixed into an adapter whose provider announces changes (webhooks). Sans-IO like the flows:
    the request's bytes and headers in, verified events out; the adapter never answers or stores."""

    @abstractmethod
    def events(self, body: bytes, headers: Mapping[str, str], now: datetime) -> list[ProviderEvent]:
        """The verified events of one request (none when it announces nothing this gateway follows);
        ``Unverified`` when its signature, algorithm, expiry or site is not this provider's own."""


def validation_reason(error: ValidationError) -> str:
    """Where and why a wire model refused a body, without the input (it may be personal data)."""
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in error.errors(include_input=False)
    )


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header, in either of its RFC 9110 forms."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def json_request(
    method: str,
    path: str,
    body: Any = None,
    params: Mapping[str, str] | None = None,
    *,
    expect: Collection[int] = (),
    writes: Mapping[str, Write] | None = None,
    item_writes: Mapping[int, Mapping[str, Write]] | None = None,
) -> httpx.Request:
    """A request relative to the provider's base URL (the dispatcher's client resolves it).

    ``expect``: error statuses the flow handles itself (Wix's 404 "not found yet" on a first
    lookup), so the dispatcher records them as successful attempts, not as failures.
    ``writes``: what a push request sets, per provider term: the worker keeps it as the gateway's
    own writes (provenance), so a read-back never takes them for a person's change.
    ``item_writes``: the same for a request carrying several subjects (``Bulk.push_many``), per index
    of the subject in the flow's input, so each write lands in that subject's own delivery.
    """
    content = None if body is None else json.dumps(body, separators=(",", ":"))
    headers = {"content-type": "application/json"} if content is not None else {}
    request = httpx.Request(method, path, params=params, content=content, headers=headers)
    request.extensions[EXPECTED] = frozenset(expect)
    request.extensions[WRITES] = dict(writes or {})
    request.extensions[ITEM_WRITES] = {index: dict(sets) for index, sets in (item_writes or {}).items()}
    return request


def expected(request: httpx.Request) -> frozenset[int]:
    """The error statuses the flow that built ``request`` expects and handles."""
    return cast(frozenset[int], request.extensions.get(EXPECTED, frozenset()))


def writes_of(request: httpx.Request) -> dict[str, Write]:
    """What a push request sets at the provider (see ``json_request``)."""
    return cast(dict[str, Write], request.extensions.get(WRITES, {}))


def item_writes_of(request: httpx.Request) -> dict[int, dict[str, Write]]:
    """What a request carrying several subjects sets for each, by the subject's index (see ``json_request``)."""
    return cast(dict[int, dict[str, Write]], request.extensions.get(ITEM_WRITES, {}))


def json_body(response: httpx.Response) -> dict[str, Any]:
    """A JSON object body, or ``{}`` when there is none (Wix system errors are empty)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def drive(
    flow: Generator[httpx.Request, httpx.Response, T], send: Callable[[httpx.Request], Awaitable[httpx.Response]]
) -> T:
    """Run a flow (a push or a read) to its result, sending each request it yields.

    A request that fails with a ProviderError is thrown into the flow at its ``yield``: a flow that can
    go on without that answer (a bulk flow's other chunks) catches it; any other lets it pass on."""
    try:
        request = next(flow)
        while True:
            try:
                response = await send(request)
            except ProviderError as error:
                request = flow.throw(error)
                continue
            request = flow.send(response)
    except StopIteration as done:
        return cast(T, done.value)


def sender(client: httpx.AsyncClient, limit: int = 1_048_576) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """Send a flow's relative request through a client configured with base URL and auth; an
    answer longer than ``limit`` bytes is refused as it streams in, never held whole in memory."""

    async def send(request: httpx.Request) -> httpx.Response:
        built = client.build_request(request.method, request.url, content=request.content, headers=request.headers)
        response = await client.send(built, stream=True)
        try:
            body = await capped(response, limit)
        finally:
            await response.aclose()
        headers = [(k, v) for k, v in response.headers.multi_items() if k not in ("content-encoding", "content-length")]
        return httpx.Response(response.status_code, headers=headers, content=body, request=built)

    return send


class TooLarge(Exception):
    """An answer longer than the provider's ``max_response_bytes``; the worker's lane makes it
    a TransientError under the provider's name."""


async def capped(response: httpx.Response, limit: int) -> bytes:
    """The decoded body, refused as soon as it passes ``limit`` (or says it will)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"an answer of {declared} bytes is over the {limit} byte limit")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"an answer over the {limit} byte limit")
    return bytes(body)

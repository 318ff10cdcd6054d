"""One contract every adapter passes, written once and subclassed per provider (the way
django-anymail subclasses one test case per backend).

Each scenario runs twice: against the provider's simulator, recording on the way (the
recording must equal the shipped cassette byte for byte; ``--gw-record=all`` rewrites it), and
against the shipped cassette, replayed. A scenario named ``test_<scenario>`` is the cassette
``<provider>/<scenario>``; its docstring is the cassette's description.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from adapters.base import Ack, Adapter, Observable, Observation, drive, sender
from adapters.errors import PermanentError, ProviderError, TransientError
from gateway.testing import providers
from gateway.testing.library import SHIPPED, CassetteLibrary, ProviderCassette
from gateway.testing.plugin import passed
from gateway.testing.scrub import find_leaks
from schemas.consent import PurposeRecord, PurposeState, SubjectState

WHEN = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
SUBJECT = {"subject_id": "subject-1001", "email": "ada@example.com", "phone": "+14155550101"}


def decided(state: SubjectState) -> str:
    """A subject's state as the decision a downstream test posts to make the same requests."""
    purposes = ", ".join(f"{purpose} {record.state.value}" for purpose, record in state.purposes.items())
    contact = ", ".join(f"{name} {value}" for name, value in (("email", state.email), ("phone", state.phone)) if value)
    return (
        f"subject {state.subject_id} ({contact or 'no email or phone'}): {purposes}, occurred_at "
        f"{state.occurred_at:%Y-%m-%dT%H:%M:%SZ}, tcf_string {state.tcf_string or 'none'}"
    )


class Scenario:
    """A scenario's provider: pushes and reads go through the cassette's transport; ``control``
    reaches the simulator directly and is a no-op on replay (its effects are in the cassette)."""

    def __init__(self, cassette: ProviderCassette) -> None:
        self.cassette = cassette
        self.adapter = cassette.adapter()
        self.client = cassette.connect(self.adapter)
        simulator = cassette.simulator
        self.direct = None if simulator is None else httpx.ASGITransport(app=simulator)
        self.pushed: list[str] = []  # what the recorded requests were made from, for the description

    async def push(self, state: SubjectState, ack: Ack | None = None, client: httpx.AsyncClient | None = None) -> Ack:
        if client is None:
            self.pushed.append(decided(state))
        flow = self.adapter.push(state, ack.acknowledged if ack else {}, ack.memo if ack else {})
        return await drive(flow, sender(client or self.client))

    async def erase(self, state: SubjectState, ack: Ack) -> Ack:
        self.pushed.append(f"the erasure of {state.subject_id}")
        return await drive(self.adapter.erase(state, ack.memo), sender(self.client))

    async def read(self, states: Sequence[SubjectState]) -> dict[str, Observation]:
        assert isinstance(self.adapter, Observable)
        return await drive(self.adapter.read(states), sender(self.client))

    def _direct(self) -> httpx.AsyncClient:
        assert self.direct is not None
        settings = self.cassette.settings
        return httpx.AsyncClient(base_url=settings.base_url, transport=self.direct, auth=self.adapter.auth())

    async def control(self, method: str, path: str, body: Any = None) -> None:
        """A call to the simulator, unrecorded: faults, or a change behind the gateway's back."""
        if self.direct is None:
            return
        async with self._direct() as client:
            response = await client.request(method, path, json=body)
        assert response.status_code < 300, response.text

    async def faults(self, **faults: Any) -> None:
        await self.control("POST", "/_faults", faults)

    async def behind(self, state: SubjectState) -> None:
        """Push ``state`` straight to the simulator, as another system writing there would."""
        if self.direct is not None:
            async with self._direct() as client:
                await self.push(state, client=client)


class AdapterContract:
    """Subclass per provider: set ``provider``, ``purposes`` (two mapped purposes) and, where
    the provider needs them, ``settings`` and ``fault_path`` (the requests faults hit)."""

    provider: ClassVar[str]
    purposes: ClassVar[tuple[str, str]]
    settings: ClassVar[Mapping[str, Any]] = {}
    cassettes: ClassVar[Path] = SHIPPED  # a provider shipped as its own package ships its cassettes too
    fault_path: ClassVar[str | None] = None
    scenario_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {"timeout": {"timeout_s": 0.05}}

    # --- fixtures and helpers -----------------------------------------------------------------

    @pytest.fixture(params=["simulator", "cassette"])
    async def world(self, request: pytest.FixtureRequest) -> AsyncIterator[Scenario]:
        function = request.function
        scenario = function.__name__.removeprefix("test_")
        name = f"{self.provider}/{scenario}"
        if scenario == "read_back" and not issubclass(providers.adapter_class(self.provider), Observable):
            pytest.skip(f"{self.provider} has no read API")
        simulated = request.param == "simulator"
        cassette = CassetteLibrary(self.cassettes, "all" if simulated else "none").open(
            name,
            settings={**self.settings, **self.scenario_settings.get(scenario, {})},
            description=" ".join((function.__doc__ or "").split()),
        )
        world = Scenario(cassette)
        async with world.client:
            yield world
        node = request.node
        assert isinstance(node, pytest.Item)
        if passed(node):
            self._settle(request, name, world)

    def _settle(self, request: pytest.FixtureRequest, name: str, world: Scenario) -> None:
        recorded = world.cassette.finish()
        if recorded is None:
            return
        made_from = f" Recorded from, in order: {'; '.join(world.pushed)}." if world.pushed else ""
        recorded = recorded.model_copy(update={"description": recorded.description + made_from})
        path = self.cassettes / f"{name}.json"
        if request.config.getoption("gw_record") != "none":
            recorded.dump(path)
            return
        assert path.is_file(), f"{path} is not shipped: record it with --gw-record=once"
        assert recorded.dumps() == path.read_text(encoding="utf-8"), (
            f"recording {name} against the simulator no longer reproduces {path}; "
            "if the change is intended, re-record with pytest tests/adapters --gw-record=all"
        )

    def state(self, first: str = "granted", second: str = "granted", **fields: Any) -> SubjectState:
        """The subject with the contract's two purposes decided as given."""
        purposes = {
            purpose: PurposeRecord(state=PurposeState(value), occurred_at=WHEN)
            for purpose, value in zip(self.purposes, (first, second), strict=True)
        }
        return SubjectState.model_validate(
            {**SUBJECT, "tcf_string": TCF, "occurred_at": WHEN, "purposes": purposes, **fields}
        )

    def assert_no_secret(self, adapter: Adapter, *things: object) -> None:
        secrets = providers.secrets_of(adapter.settings)
        for thing in (adapter, adapter.settings, *things):
            assert not find_leaks(f"{thing!s} {thing!r}", secrets), thing

    async def fails(self, world: Scenario, error: type[ProviderError], status: int | None) -> ProviderError:
        with pytest.raises(error) as raised:
            await world.push(self.state())
        assert raised.value.status_code == status
        assert raised.value.provider == self.provider
        self.assert_no_secret(world.adapter, raised.value)
        return raised.value

    # --- scenarios every provider passes ----------------------------------------------------------

    async def test_signup(self, world: Scenario) -> None:
        """A first decision: both purposes granted, pushed to a provider that knows nothing of the subject."""
        state = self.state()
        ack = await world.push(state)
        assert ack.acknowledged == world.adapter.project(state)

    async def test_change_one_purpose(self, world: Scenario) -> None:
        """Both purposes granted, then the second one denied: the change is pushed as the provider needs it."""
        first = await world.push(self.state())
        changed = self.state(second="denied")
        ack = await world.push(changed, first)
        assert ack.acknowledged == world.adapter.project(changed)

    async def test_read_back(self, world: Scenario) -> None:
        """A push, then a read-back of what the provider holds (providers that can be read)."""
        state = self.state(second="denied")
        await world.push(state)
        observed = await world.read([state])
        assert observed[state.subject_id].held == world.adapter.project(state)

    async def test_erase(self, world: Scenario) -> None:
        """A push, then the person's erasure: the provider holds nothing of theirs, or every purpose denied."""
        state = self.state()
        erased = await world.erase(state, await world.push(state))
        record = PurposeRecord(state=PurposeState.denied, occurred_at=WHEN)
        denied = world.adapter.project(
            state.model_copy(update={"purposes": dict.fromkeys(world.adapter.settings.purposes, record)})
        )
        assert erased.acknowledged in ({}, denied), erased.acknowledged
        if isinstance(world.adapter, Observable):
            observed = await world.read([state])
            assert observed[state.subject_id].held in ({}, denied)

    async def test_no_contact_data(self, world: Scenario) -> None:
        """A subject with neither email nor phone: what cannot exist at the provider is left out, the rest is pushed."""
        state = self.state(email=None, phone=None)
        ack = await world.push(state)
        assert ack.acknowledged == world.adapter.project(state)
        assert not set(world.adapter.not_applicable(state)) & set(ack.acknowledged)

    async def test_rate_limited_429(self, world: Scenario) -> None:
        """The provider answers 429 with Retry-After: 30; the push is retried later, when it says."""
        await world.faults(error_rate=1, status=429, retry_after_s=30, path=self.fault_path)
        error = await self.fails(world, TransientError, 429)
        assert isinstance(error, TransientError) and error.retry_after == 30

    async def test_outage_503_then_ok(self, world: Scenario) -> None:
        """The provider answers 503, then recovers: the same push succeeds on the retry."""
        await world.faults(error_rate=1, status=503, path=self.fault_path)
        await self.fails(world, TransientError, 503)
        await world.faults(error_rate=0)
        state = self.state()
        assert (await world.push(state)).acknowledged == world.adapter.project(state)

    async def test_rejected_400(self, world: Scenario) -> None:
        """The provider rejects the push (400): a permanent error, never retried, naming no secret."""
        await world.faults(error_rate=1, status=400, path=self.fault_path)
        await self.fails(world, PermanentError, 400)

    async def test_timeout(self, world: Scenario) -> None:
        """The provider never answers; the client gives up after its timeout."""
        await world.faults(timeout_rate=1, hang_s=5, path=self.fault_path)
        with pytest.raises(httpx.TimeoutException):
            await world.push(self.state())

    def test_no_secret_in_reprs(self) -> None:
        """Settings, adapter and auth show no secret (errors are checked in every failing scenario)."""
        kind = providers.adapter_class(self.provider)
        adapter = kind(kind.Settings.model_validate(providers.stand_in_settings(self.provider, self.settings)))
        self.assert_no_secret(adapter, adapter.auth())

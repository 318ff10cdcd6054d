"""A gateway wired to every installed provider's simulator in-process, with a clock tests move."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from adapters.registry import providers as registered
from adapters.registry import simulators_app
from gateway.config import Settings, build_adapters
from gateway.reconcile.rows import Disagreement, Refresher
from gateway.service import Gateway
from gateway.store import Store
from schemas import tcf
from schemas.api import DeliveryStatus, RunOut
from schemas.consent import Decision

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
PROVIDERS = tuple(registered())
# Every provider runs on its demo settings (the registry's); these are the names and keys the tests read back.
FIXED: dict[str, dict[str, Any]] = {
    "masivo": {"api_key": "masivo-key-0123456789", "tcf": None},  # a test that wants strings built says so
    "wix": {"api_key": "wix-key-0123456789", "site_id": "site"},
    "intempt": {"api_key": "pfx.intempt-secret-0123456789", "org": "acme", "project": "web"},
}
# A TCF v2 string as CMPs write them since mid-2024: "CQ…", two segments.
CMP_STRING_2024 = tcf.encode(
    tcf.CoreString(
        created=datetime(2024, 9, 30, 18, 51, 31, tzinfo=UTC),
        last_updated=datetime(2024, 9, 30, 18, 51, 31, tzinfo=UTC),
        cmp_id=7,
        cmp_version=1,
        consent_screen=1,
        consent_language="EN",
        vendor_list_version=73,
        tcf_policy_version=5,
        is_service_specific=True,
        purpose_consents=frozenset(range(1, 12)),
        vendor_consents=frozenset(range(1, 1332)),
        other_segments=("QAAAAAA",),
    )
)


def phone_of(subject: str) -> str:
    """A phone number of the subject's own, the same on every call."""
    return f"+1415{zlib.crc32(subject.encode()) % 10**7:07d}"


def configured(providers: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every installed provider on its demo settings at its in-process simulator, ``providers`` added."""
    return {
        name: entry.demo(f"https://sim/{name}")
        | FIXED.get(name, {})
        | {"timeout_s": 0.2}
        | dict((providers or {}).get(name, {}))
        for name, entry in registered().items()
    }


async def rows_disagreeing(store: Store) -> list[Disagreement]:
    """The drift view's stored rows that computing them from scratch contradicts, after the marked
    ones are stored (the world's providers; a store whose rows were computed with other settings has
    them computed again first, and then agrees trivially)."""
    adapters = build_adapters(Settings(providers=configured()))
    return await Refresher(store, adapters, lambda: NOW, chunk=500).check()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class World:
    """A gateway wired to every provider's simulator in-process, with a clock the test moves."""

    def __init__(
        self,
        store: Store,
        *,
        wrap_transport: Callable[[str, httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
        retry: Mapping[str, Any] | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        simulator_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``wrap_transport(provider, asgi)`` may put e.g. a fault-injecting transport in front of a
        provider's simulator (the worker's side only; ``control`` stays direct); ``retry`` replaces
        the retry settings below; ``providers`` adds settings to a provider's (e.g. its drift_policy);
        ``simulator_options`` more arguments for a provider's simulator (Wix's ``webhooks``)."""
        self.simulators = simulators_app(options=simulator_options)
        transport = httpx.ASGITransport(app=self.simulators)
        self.control = httpx.AsyncClient(transport=transport, base_url="http://sim")
        self.sleeps = Sleeps()
        self.now = NOW
        retry_settings = dict(retry) if retry is not None else {"attempts": 4, "ladder_s": [60, 600, 3600]}
        settings = Settings(providers=configured(providers), retry=retry_settings)
        self.gateway = Gateway(
            settings,
            store=store,
            transports={name: wrap_transport(name, transport) if wrap_transport else transport for name in PROVIDERS},
            clock=lambda: self.now,
            sleep=self.sleeps,
        )

    async def faults(self, provider: str, **faults: Any) -> None:
        response = await self.control.post(f"/{provider}/_faults", json=faults)
        assert response.status_code == 200, response.text

    async def inspect(self, provider: str) -> dict[str, Any]:
        return (await self.control.get(f"/{provider}/_inspect")).json()

    async def decide(
        self, subject: str, minutes: int, *, email: str | None = None, phone: str | None = None, **purposes: str
    ) -> str:
        """A decision ``minutes`` into the hour before NOW; each subject has an email and a phone of its own
        unless given (Wix keeps one consent per address: a shared one is a test's choice, never an accident)."""
        decision = Decision.model_validate(
            {
                "subject": {
                    "id": subject,
                    "email": email or f"{subject}@example.com",
                    "phone": phone or phone_of(subject),
                },
                "purposes": purposes,
                "tcf_string": TCF,
                "occurred_at": NOW - timedelta(minutes=60 - minutes),
            },
            strict=False,
        )
        return (await self.gateway.record(decision)).id

    async def readback(self, *providers: str) -> RunOut:
        """A read-back run a second from now, then (a second later) the pushes it queued."""
        self.now += timedelta(seconds=1)
        queued = await self.gateway.reconciler.start(list(providers) or None, None)
        claimed = await self.gateway.store.runs.claim(self.now, 60)
        assert claimed is not None and claimed.id == queued.id
        finished = await self.gateway.reconciler.execute(claimed, self.gateway.worker)
        self.now += timedelta(seconds=1)
        await self.gateway.worker.drain()
        return finished

    async def statuses(self, decision_id: str) -> dict[str, DeliveryStatus]:
        found = await self.gateway.store.ledger.decision(decision_id)
        assert found is not None
        return {d.provider: d.status for d in found.deliveries}

"""Finding cassettes and opening them for a test: replayed, or recorded anew.

A name is ``<provider>/<scenario>``; the user's directory is searched first, then the cassettes
shipped in this package. Modes: ``none`` replays and never records (CI), ``once`` records what
is missing, ``all`` records everything again. Recording goes against the live provider when
``CONSENT_GATEWAY_RECORD_<PROVIDER>__<FIELD>`` gives its secrets, else against its simulator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
from starlette.applications import Starlette

from adapters.base import Adapter, ProviderSettings
from gateway.testing import providers
from gateway.testing.cassette import Cassette
from gateway.testing.recorder import Recorder
from gateway.testing.replay import Replayer

Mode = Literal["none", "once", "all"]
MODES: tuple[Mode, ...] = ("none", "once", "all")
SHIPPED = Path(__file__).parent / "cassettes"
NAME = re.compile(r"[a-z0-9_]+/[A-Za-z0-9_.-]+")


class CassetteNotFound(LookupError):
    """No such cassette, and the record mode says not to record it; the message says how to."""


class ProviderCassette:
    """One provider's cassette in a test: its settings, a transport answering from it (or
    recording through it), and ``connect()`` for a client configured like the gateway's."""

    def __init__(
        self,
        name: str,
        cassette: Cassette | None,
        *,
        optional: bool = False,
        volatile: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> None:
        self.name = name
        self.provider = name.split("/", 1)[0]
        self.adapter_class = providers.adapter_class(self.provider)
        volatile = sorted({*volatile, *self.adapter_class.volatile})
        self.simulator: Starlette | None = None
        self.recorder: Recorder | None = None
        self.replayer: Replayer | None = None
        if cassette is None:
            live = providers.live_settings(self.provider)
            self.values = (live or providers.stand_in_settings(self.provider)) | dict(settings or {})
            self.settings: ProviderSettings = self.adapter_class.Settings.model_validate(self.values)
            if live is None:
                self.simulator, inner = providers.simulator(self.provider)
                inner = providers.Deadline(inner, self.settings.timeout_s)
            else:
                inner = httpx.AsyncHTTPTransport()
            self.recorder = Recorder(
                inner,
                provider=self.provider,
                base_url=self.settings.base_url,
                secrets=providers.secrets_of(self.settings),
                description=description,
                settings=providers.recorded_settings(self.values, self.provider),
                volatile=volatile,
            )
            self.transport: httpx.AsyncBaseTransport = self.recorder
        else:
            self.values = providers.stand_in_settings(self.provider, cassette.settings | dict(settings or {}))
            self.settings = self.adapter_class.Settings.model_validate(self.values)
            cassette = cassette.model_copy(update={"volatile": sorted({*cassette.volatile, *volatile})})
            self.replayer = Replayer(cassette, self.settings.base_url, name=name, optional=optional)
            self.transport = self.replayer.transport

    def adapter(self) -> Adapter:
        return self.adapter_class(self.settings)

    def connect(self, adapter: Adapter | None = None) -> httpx.AsyncClient:
        """A client as the gateway's worker builds one: base URL, the adapter's auth, this transport."""
        auth = (adapter or self.adapter()).auth()
        settings = self.settings
        return httpx.AsyncClient(
            base_url=settings.base_url, auth=auth, transport=self.transport, timeout=settings.timeout_s
        )

    def finish(self) -> Cassette | None:
        """Replay: fail on any miss or unused interaction. Recording: the scrubbed cassette."""
        if self.replayer is not None:
            self.replayer.verify()
            return None
        assert self.recorder is not None
        return self.recorder.cassette()


class CassetteLibrary:
    def __init__(self, directory: Path | None = None, mode: Mode = "none") -> None:
        if mode not in MODES:
            raise ValueError(f"record mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.directory = directory
        self.mode = mode

    def find(self, name: str) -> Path | None:
        if not NAME.fullmatch(name):
            raise ValueError(f"a cassette name is '<provider>/<scenario>', not {name!r}")
        for directory in (self.directory, SHIPPED):
            if directory is not None and (path := directory / f"{name}.json").is_file():
                return path
        return None

    def open(
        self,
        name: str,
        *,
        optional: bool = False,
        volatile: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> ProviderCassette:
        found = self.find(name)
        record = self.mode == "all" or (self.mode == "once" and found is None)
        if found is None and not record:
            where = " or ".join(dict.fromkeys(str(d) for d in (self.directory, SHIPPED) if d is not None))
            raise CassetteNotFound(
                f"no cassette {name!r} in {where}; record it with pytest --gw-record=once (against the "
                f"simulator, or live with CONSENT_GATEWAY_RECORD_{name.split('/')[0].upper()}__<FIELD> set)"
            )
        cassette = None if record or found is None else Cassette.load(found)
        return ProviderCassette(
            name, cassette, optional=optional, volatile=volatile, settings=settings, description=description
        )

    def save(self, name: str, cassette: Cassette) -> Path:
        path = (self.directory or SHIPPED) / f"{name}.json"
        cassette.dump(path)
        return path

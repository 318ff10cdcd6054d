"""Provider adapters behind one contract (``adapters.base.Adapter``), and their registry.

Adding a provider = one adapter module, one wire-schema module, one simulator, one line here.
"""

from __future__ import annotations

from adapters.base import Adapter
from adapters.intempt import IntemptAdapter
from adapters.masivo import MasivoAdapter
from adapters.wix import WixAdapter

ADAPTERS: dict[str, type[Adapter]] = {adapter.name: adapter for adapter in (MasivoAdapter, WixAdapter, IntemptAdapter)}

__all__ = ["ADAPTERS", "Adapter"]

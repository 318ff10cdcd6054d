"""Provider adapters behind one contract (``adapters.base.Adapter``).

Which providers exist is the registry's business (``adapters.registry``): each provider's package
names its adapter, simulator and demo settings in a ``consent_gateway.providers`` entry point.
"""

from __future__ import annotations

from adapters.base import Adapter

__all__ = ["Adapter"]

"""consent-gateway: the service (app factory, routes, store, delivery worker, CLI)."""

import importlib.metadata

__version__ = importlib.metadata.version("consent-gateway")

"""consent-gateway: the service (app factory, routes, store, delivery worker, CLI)."""

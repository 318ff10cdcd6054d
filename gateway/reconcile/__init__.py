"""Reconciliation: read-back runs that compare what the providers hold with what the gateway
wants, and act on the drift by each provider's policy."""

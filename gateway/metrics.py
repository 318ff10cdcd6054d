"""Metrics for ``/metrics``: API requests, decisions, deliveries (delivered, retried, dead-lettered,
waiting), read-back runs, provider events, erasures and expiries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One registry per gateway, so several gateways (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["provider"]
        self.deliveries = Counter(
            "consent_gateway_deliveries",
            "Deliveries finished, by outcome",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "consent_gateway_attempts",
            "Requests tried at providers, by outcome",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "consent_gateway_retries",
            "Retries: in-process, or re-scheduled on the durable ladder",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "consent_gateway_dead_letters", "Deliveries that failed for good", labels, registry=self.registry
        )
        self.latency = Histogram(
            "consent_gateway_attempt_seconds",
            "Duration of one request to a provider",
            labels,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "consent_gateway_queue_depth", "Deliveries due now and not yet claimed", labels, registry=self.registry
        )
        self.requests = Counter(
            "consent_gateway_http_requests",
            "API requests answered, by route template (never a raw path: ids stay out), method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "consent_gateway_http_request_seconds",
            "Time to answer an API request, by route template and method",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=self.registry,
        )
        self.decisions = Counter(
            "consent_gateway_decisions",
            "Decisions: accepted (recorded), superseded (recorded, every purpose already held a newer one), "
            "rejected (refused: invalid, erased subject, over a limit)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("accepted", "superseded", "rejected"):  # at 0 from the start: a rate needs its series
            self.decisions.labels(outcome)
        self.runs = Counter(
            "consent_gateway_runs",
            "Read-back runs finished, by status (done, failed)",
            ["status"],
            registry=self.registry,
        )
        self.run_rows = Counter(
            "consent_gateway_run_rows",
            "Rows of finished read-back runs, by provider and outcome (read, unreadable, diverged, adopted, repushed)",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "consent_gateway_provider_events",
            "Provider events (webhooks): refused (unverified), received, and what became of them "
            "(applied, ignored, reported)",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.erasures = Counter(
            "consent_gateway_erasures",
            "Erasures requested, and completed (every removal done, the store scrubbed)",
            ["stage"],
            registry=self.registry,
        )
        self.expired = Counter(
            "consent_gateway_expired_purposes", "Purposes whose consent expired", registry=self.registry
        )
        self.oldest_due = Gauge(
            "consent_gateway_oldest_due_age_seconds",
            "How long the oldest due delivery has waited",
            labels,
            registry=self.registry,
        )

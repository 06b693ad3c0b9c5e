"""Prometheus metrics with the names of DESIGN §8.

Each application owns one :class:`Metrics` (its own registry), so several apps
can live in one test process without colliding. Services register their domain
counters on the same object.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets tuned for the SLOs (100 ms API p95, 50 ms store p95).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The standard instruments of a Switchyard service, on a private registry."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests served",
            ["service", "route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["service", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_published = Counter(
            "events_published_total",
            "Events published with a broker confirm",
            ["service", "type"],
            registry=self.registry,
        )
        self.events_unroutable = Counter(
            "events_unroutable_total",
            "Events the broker returned because no queue was bound for them",
            ["service", "type"],
            registry=self.registry,
        )
        self.events_consumed = Counter(
            "events_consumed_total",
            "Events taken from a queue, by outcome (ok, duplicate, retry, dead)",
            ["service", "queue", "outcome"],
            registry=self.registry,
        )
        self.event_handler_duration = Histogram(
            "event_handler_duration_seconds",
            "Event handler latency",
            ["service", "queue"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "outbox_pending",
            "Events written to the outbox and not yet confirmed by the broker",
            ["service"],
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest event waiting in the outbox",
            ["service"],
            registry=self.registry,
        )
        self.store_duration = Histogram(
            "db_operation_duration_seconds",
            "MongoDB command latency",
            ["service", "command"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A domain counter on this service's registry (a ``service`` label is added)."""
        return Counter(name, documentation, ["service", *labels], registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(
            name, documentation, ["service", *labels], buckets=buckets, registry=self.registry
        )

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, ["service", *labels], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

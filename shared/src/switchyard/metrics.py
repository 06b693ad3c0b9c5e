"""Prometheus metrics with the names of DESIGN §8, and the one shape of a service's own.

Each application owns one :class:`Metrics` (its own registry), so several apps
can live in one test process without colliding. A service's own instruments live in
``<service>_svc/metrics.py`` as a :class:`ServiceMetrics` subclass on that registry::

    class NotificationMetrics(ServiceMetrics):
        def __init__(self, metrics: MetricsRegistry) -> None:
            super().__init__(metrics)
            self.deliveries = metrics.counter("notification_deliveries_total", "…", ["outcome"])

        def delivered(self, outcome: str) -> None:          # callers use verbs only
            self.deliveries.labels(self.service, outcome).inc()

    app[keys.NOTIFICATION_METRICS] = NotificationMetrics(app[shared_keys.METRICS])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# Latency buckets tuned for the SLOs (100 ms API p95, 50 ms store p95).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class MetricsRegistry:
    """One service's private Prometheus registry; every instrument carries a ``service`` label."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter on this registry (a ``service`` label is added)."""
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

    def collector(self, collector: Collector) -> None:
        """Add a custom collector (instruments counted outside prometheus_client)."""
        self.registry.register(collector)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample of this service (0 when never recorded):
        ``value("events_consumed_total", queue="q", outcome="ok")``."""
        found = self.registry.get_sample_value(name, {"service": self.service, **labels})
        return 0.0 if found is None else found

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Metrics(MetricsRegistry):
    """The standard instruments of a Switchyard service (DESIGN §8), on a private registry."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
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


class ServiceMetrics:
    """The shape of a service's own metrics, one class in ``<service>_svc/metrics.py``:

    - built once in ``create_app`` on the app's registry (``app[keys.METRICS]``), so its
      instruments are served by the same ``/metrics``;
    - instruments declared in ``__init__`` (``self.metrics.counter(...)``, ``histogram``,
      ``gauge``), named ``<service>_<thing>_<unit>``;
    - recorded through verbs (``metrics.login("success")``): callers never pass the
      ``service`` label or touch an instrument; tests read numbers with :meth:`value`.
    """

    def __init__(self, metrics: MetricsRegistry) -> None:
        self.metrics = metrics
        self.service = metrics.service

    def value(self, name: str, **labels: Any) -> float:
        """One sample's current value (tests): ``value("auth_logins_total", outcome="locked")``."""
        return self.metrics.value(name, **{key: str(value) for key, value in labels.items()})

"""The notification service's own metrics: deliveries by channel, template and outcome, and
send latency (the shape of ``switchyard.metrics.ServiceMetrics``)."""

from __future__ import annotations

from typing import Literal

from switchyard.metrics import MetricsRegistry, ServiceMetrics

Outcome = Literal["sent", "failed", "suppressed", "deferred", "duplicate"]

# Event-to-send lag spans retries (seconds to minutes), so it gets wider buckets.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class NotificationMetrics(ServiceMetrics):
    def __init__(self, metrics: MetricsRegistry) -> None:
        super().__init__(metrics)
        self.deliveries = metrics.counter(
            "notification_deliveries_total",
            "Delivery decisions by channel, template and outcome "
            "(sent, failed, suppressed, deferred = will retry, duplicate = already handled)",
            ["channel", "template", "outcome"],
        )
        self.send_duration = metrics.histogram(
            "notification_send_duration_seconds",
            "Time from handing a message to the channel (waiting for a free connection "
            "included) until the provider accepted or refused it",
            ["channel"],
        )
        self.event_lag = metrics.histogram(
            "notification_event_to_send_seconds",
            "Time from the event to the provider accepting its message",
            ["channel"],
            buckets=LAG_BUCKETS,
        )

    def outcome(self, channel: str, template: str, outcome: Outcome) -> None:
        self.deliveries.labels(self.service, channel, template, outcome).inc()

    def sent_after(self, channel: str, *, send_seconds: float, lag_seconds: float) -> None:
        self.send_duration.labels(self.service, channel).observe(send_seconds)
        self.event_lag.labels(self.service, channel).observe(max(lag_seconds, 0.0))

    def attempt_took(self, channel: str, seconds: float) -> None:
        self.send_duration.labels(self.service, channel).observe(seconds)

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

        self.tokens_removed = metrics.counter(
            "notification_push_tokens_removed_total",
            "Push tokens removed because FCM called them unregistered or invalid",
        )
        self.push_auth_failures = metrics.counter(
            "notification_push_auth_failures_total",
            "FCM refused our credentials (token exchange or 401/403 on send)",
        )
        self.digest_folds = metrics.counter(
            "notification_digest_folds_total",
            "Chat messages folded into a digest push instead of a push of their own",
        )
        self.webhook_attempts = metrics.counter(
            "notification_webhook_attempts_total",
            "Webhook delivery attempts by subscription and outcome "
            "(delivered, failed, refused = SSRF guard, gone = 410)",
            ["endpoint", "outcome"],
        )
        self.webhook_latency = metrics.histogram(
            "notification_webhook_duration_seconds",
            "Time for a webhook endpoint to answer, by subscription",
            ["endpoint"],
        )
        self.webhooks_disabled = metrics.counter(
            "notification_webhooks_disabled_total",
            "Webhook subscriptions disabled (410 or 24 h of failures)",
            ["reason"],
        )

    def outcome(self, channel: str, template: str, outcome: Outcome) -> None:
        self.deliveries.labels(self.service, channel, template, outcome).inc()

    def sent_after(self, channel: str, *, send_seconds: float, lag_seconds: float) -> None:
        self.send_duration.labels(self.service, channel).observe(send_seconds)
        self.event_lag.labels(self.service, channel).observe(max(lag_seconds, 0.0))

    def attempt_took(self, channel: str, seconds: float) -> None:
        self.send_duration.labels(self.service, channel).observe(seconds)

    def token_removed(self) -> None:
        self.tokens_removed.labels(self.service).inc()

    def push_auth_failed(self) -> None:
        self.push_auth_failures.labels(self.service).inc()

    def digest_folded(self) -> None:
        self.digest_folds.labels(self.service).inc()

    def webhook_attempt(self, endpoint: str, outcome: str, seconds: float | None) -> None:
        self.webhook_attempts.labels(self.service, endpoint, outcome).inc()
        if seconds is not None:
            self.webhook_latency.labels(self.service, endpoint).observe(seconds)

    def webhook_disabled(self, reason: str) -> None:
        self.webhooks_disabled.labels(self.service, reason).inc()

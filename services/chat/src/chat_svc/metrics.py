"""The chat service's own metrics: sockets connected, connects by outcome, socket events by
name and outcome, messages sent, and the send → delivered latency."""

from __future__ import annotations

from switchyard.metrics import MetricsRegistry, ServiceMetrics

DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ChatMetrics(ServiceMetrics):
    def __init__(self, metrics: MetricsRegistry) -> None:
        super().__init__(metrics)
        self.sockets = metrics.gauge("chat_sockets_connected", "Sockets connected to this replica")
        self.connects = metrics.counter(
            "chat_socket_connects_total",
            "Socket.IO connection attempts, by outcome (accepted or the refusal reason)",
            ["outcome"],
        )
        self.events = metrics.counter(
            "chat_socket_events_total",
            "Socket.IO client events handled, by event and outcome",
            ["event", "outcome"],
        )
        self.messages = metrics.counter(
            "chat_messages_sent_total", "Messages stored (a resend of a known one not counted)"
        )
        self.fanout_failures = metrics.counter(
            "chat_fanout_publish_failures_total",
            "Emits the fan-out exchange refused (remote sockets missed them; sync recovers)",
        )
        self.delivery = metrics.histogram(
            "chat_message_delivery_seconds",
            "Time from a message being stored to a recipient's client acknowledging it",
            buckets=DELIVERY_BUCKETS,
        )

    def fanout_failed(self) -> None:
        self.fanout_failures.labels(self.service).inc()

    def socket_connected(self) -> None:
        self.connects.labels(self.service, "accepted").inc()
        self.sockets.labels(self.service).inc()

    def socket_refused(self, reason: str) -> None:
        self.connects.labels(self.service, reason).inc()

    def socket_disconnected(self) -> None:
        self.sockets.labels(self.service).dec()

    def socket_event(self, event: str, outcome: str) -> None:
        self.events.labels(self.service, event, outcome).inc()

    def message_sent(self) -> None:
        self.messages.labels(self.service).inc()

    def delivered_after(self, seconds: float) -> None:
        self.delivery.labels(self.service).observe(max(0.0, seconds))

"""The payments service's own metrics: transfers by kind and outcome, money moved, wallet
operation latency, the ledger's imbalance and stale pending transfers, webhooks."""

from __future__ import annotations

from switchyard.metrics import MetricsRegistry, ServiceMetrics


class PaymentsMetrics(ServiceMetrics):
    def __init__(self, metrics: MetricsRegistry) -> None:
        super().__init__(metrics)
        self.transfers = metrics.counter(
            "payments_transfers_total",
            "Ledger transfers finished, by kind and outcome",
            ["kind", "outcome"],
        )
        self.moved = metrics.counter(
            "payments_money_moved_minor_units_total",
            "Money moved by posted transfers, in minor units",
            ["kind", "currency"],
        )
        self.operation_duration = metrics.histogram(
            "payments_wallet_operation_duration_seconds",
            "Time of a money-moving operation (offer, deposit, withdrawal, adjustment step)",
            ["operation"],
        )
        self.imbalance = metrics.gauge(
            "payments_ledger_imbalance_minor_units",
            "Sum over all accounts counting money in flight, per currency (must be 0)",
            ["currency"],
        )
        self.negative = metrics.gauge(
            "payments_ledger_negative_accounts", "Never-negative accounts below zero (must be 0)"
        )
        self.pending = metrics.gauge(
            "payments_pending_transfers", "Transfers not yet posted or failed"
        )
        self.oldest_pending = metrics.gauge(
            "payments_oldest_pending_transfer_age_seconds", "Age of the oldest pending transfer"
        )
        self.swept = metrics.counter(
            "payments_sweeper_recovered_total",
            "Work the sweeper finished for a request that stopped (transfers, records, webhooks)",
            ["what"],
        )
        self.webhooks = metrics.counter(
            "payments_webhook_events_total", "Provider webhook events, by outcome", ["outcome"]
        )
        self.signature_failures = metrics.counter(
            "payments_webhook_signature_failures_total",
            "Webhook requests whose signature did not verify",
        )
        self.refund_shortfalls = metrics.counter(
            "payments_refund_shortfalls_total",
            "Card refunds larger than what the wallet still held (flagged for an admin)",
        )

    def transfer_finished(self, kind: str, outcome: str, amount: int, currency: str) -> None:
        self.transfers.labels(self.service, kind, outcome).inc()
        if outcome == "posted":
            self.moved.labels(self.service, kind, currency).inc(amount)

    def operation_took(self, operation: str, seconds: float) -> None:
        self.operation_duration.labels(self.service, operation).observe(seconds)

    def ledger_checked(
        self, imbalance: dict[str, int], negative: int, pending: int, oldest: float
    ) -> None:
        for currency, amount in imbalance.items():
            self.imbalance.labels(self.service, currency).set(amount)
        self.negative.labels(self.service).set(negative)
        self.pending.labels(self.service).set(pending)
        self.oldest_pending.labels(self.service).set(oldest)

    def recovered(self, what: str, count: int = 1) -> None:
        if count:
            self.swept.labels(self.service, what).inc(count)

    def webhook(self, outcome: str) -> None:
        self.webhooks.labels(self.service, outcome).inc()

    def signature_failed(self) -> None:
        self.signature_failures.labels(self.service).inc()

    def refund_shortfall(self) -> None:
        self.refund_shortfalls.labels(self.service).inc()

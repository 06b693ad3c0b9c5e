"""The auth service's domain counters, on the app's own registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from switchyard.metrics import Metrics


@dataclass
class AuthMetrics:
    service: str
    logins: Counter
    codes_issued: Counter
    lockouts: Counter
    refreshes: Counter
    reuse_detected: Counter
    registrations: Counter

    @classmethod
    def on(cls, metrics: Metrics) -> AuthMetrics:
        return cls(
            service=metrics.service,
            logins=metrics.counter(
                "auth_logins_total",
                "Login attempts by outcome (success, invalid_credentials, locked, unverified)",
                ["outcome"],
            ),
            codes_issued=metrics.counter(
                "auth_codes_issued_total", "One-time codes issued, by purpose", ["purpose"]
            ),
            lockouts=metrics.counter("auth_lockouts_total", "Accounts locked after failed logins"),
            refreshes=metrics.counter(
                "auth_token_refreshes_total",
                "Refresh-token presentations by outcome (rotated, invalid, reuse_detected)",
                ["outcome"],
            ),
            reuse_detected=metrics.counter(
                "auth_refresh_reuse_detected_total",
                "Rotated refresh tokens presented again (their family was revoked)",
            ),
            registrations=metrics.counter("auth_registrations_total", "Accounts registered"),
        )

    def login(self, outcome: str) -> None:
        self.logins.labels(self.service, outcome).inc()

    def code_issued(self, purpose: str) -> None:
        self.codes_issued.labels(self.service, purpose).inc()

    def refresh(self, outcome: str) -> None:
        self.refreshes.labels(self.service, outcome).inc()

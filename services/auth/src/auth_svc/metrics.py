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
    password_verifications: Counter
    strength_checks: Counter
    codes_blocked: Counter
    background_dropped: Counter

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
            password_verifications=metrics.counter(
                "auth_password_verifications_total",
                "Passwords compared with a stored hash (argon2id): logins, changes, deletions",
            ),
            strength_checks=metrics.counter(
                "auth_password_strength_checks_total",
                "New passwords judged by the strength check (zxcvbn, in a worker process)",
            ),
            codes_blocked=metrics.counter(
                "auth_codes_blocked_total",
                "Accounts whose codes of a purpose were blocked after too many wrong guesses",
                ["purpose"],
            ),
            background_dropped=metrics.counter(
                "auth_background_dropped_total",
                "Code requests answered but not carried out: too much work was waiting",
            ),
        )

    def login(self, outcome: str) -> None:
        self.logins.labels(self.service, outcome).inc()

    def code_issued(self, purpose: str) -> None:
        self.codes_issued.labels(self.service, purpose).inc()

    def refresh(self, outcome: str) -> None:
        self.refreshes.labels(self.service, outcome).inc()

"""The auth service's own metrics (the shape of ``switchyard.metrics.ServiceMetrics``):
sign-ins, codes, lockouts, refreshes, registrations and the password work they cost."""

from __future__ import annotations

from typing import Literal

from switchyard.metrics import MetricsRegistry, ServiceMetrics

LoginOutcome = Literal["success", "invalid_credentials", "locked", "unverified", "interrupted"]
RefreshOutcome = Literal["rotated", "invalid", "reuse_detected"]


class AuthMetrics(ServiceMetrics):
    def __init__(self, metrics: MetricsRegistry) -> None:
        super().__init__(metrics)
        self.logins = metrics.counter(
            "auth_logins_total",
            "Login attempts by outcome (success, invalid_credentials, locked, unverified, interrupted)",
            ["outcome"],
        )
        self.codes_issued = metrics.counter(
            "auth_codes_issued_total", "One-time codes issued, by purpose", ["purpose"]
        )
        self.lockouts = metrics.counter(
            "auth_lockouts_total", "Accounts locked after failed logins"
        )
        self.refreshes = metrics.counter(
            "auth_token_refreshes_total",
            "Refresh-token presentations by outcome (rotated, invalid, reuse_detected)",
            ["outcome"],
        )
        self.reuse_detected = metrics.counter(
            "auth_refresh_reuse_detected_total",
            "Rotated refresh tokens presented again (their family was revoked)",
        )
        self.registrations = metrics.counter("auth_registrations_total", "Accounts registered")
        self.password_verifications = metrics.counter(
            "auth_password_verifications_total",
            "Passwords compared with a stored hash (argon2id): logins, changes, deletions",
        )
        self.strength_checks = metrics.counter(
            "auth_password_strength_checks_total",
            "New passwords judged by the strength check (zxcvbn, in a worker process)",
        )
        self.codes_blocked = metrics.counter(
            "auth_codes_blocked_total",
            "Accounts whose codes of a purpose were blocked after too many wrong guesses",
            ["purpose"],
        )
        self.background_dropped = metrics.counter(
            "auth_background_dropped_total",
            "Code requests answered but not carried out: too much work was waiting",
        )

    def login(self, outcome: LoginOutcome) -> None:
        self.logins.labels(self.service, outcome).inc()

    def code_issued(self, purpose: str) -> None:
        self.codes_issued.labels(self.service, purpose).inc()

    def code_guessing_blocked(self, purpose: str) -> None:
        self.codes_blocked.labels(self.service, purpose).inc()

    def locked_out(self) -> None:
        self.lockouts.labels(self.service).inc()

    def refresh(self, outcome: RefreshOutcome) -> None:
        self.refreshes.labels(self.service, outcome).inc()

    def refresh_reused(self) -> None:
        self.reuse_detected.labels(self.service).inc()

    def registered(self) -> None:
        self.registrations.labels(self.service).inc()

    def password_compared(self) -> None:
        self.password_verifications.labels(self.service).inc()

    def strength_checked(self) -> None:
        self.strength_checks.labels(self.service).inc()

    def background_work_dropped(self) -> None:
        self.background_dropped.labels(self.service).inc()

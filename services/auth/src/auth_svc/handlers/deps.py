"""What every command needs: the dependency bundle, the token pair, event helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from auth_svc.domain.clock import Clock
from auth_svc.domain.users import User, email_key
from auth_svc.handlers.ports import (
    AccessTokens,
    AttemptBudget,
    Background,
    Codes,
    PasswordHasher,
    Sessions,
    StrengthCheck,
    Users,
)
from auth_svc.metrics import AuthMetrics
from switchyard.envelope import Envelope, new_envelope
from switchyard.events.auth import UserUpdated, UserVerified

SERVICE = "auth"
# A write guarded on the version it read retries with a fresh read when another write won.
WRITE_RETRIES = 20


@dataclass
class Deps:
    """Everything the commands need, built once in ``create_app`` (the unit tests build it
    from in-memory fakes of the same interfaces)."""

    clock: Clock
    users: Users
    codes: Codes
    sessions: Sessions
    # Password attempts per address (the lockout), known account or not.
    login_attempts: AttemptBudget
    # Wrong code guesses per address and purpose, across every code.
    code_guesses: AttemptBudget
    # Codes mailed per address and purpose (the cooldown and the hourly cap).
    code_issues: AttemptBudget
    # One registration of an address at a time (a budget of 1: a lease that expires).
    signup_leases: AttemptBudget
    # Password changes per account and hour.
    password_changes: AttemptBudget
    passwords: PasswordHasher
    strength: StrengthCheck
    tokens: AccessTokens
    metrics: AuthMetrics
    background: Background
    notify_outbox: Callable[[], None]
    access_token_ttl: int
    refresh_token_ttl: int
    otp_ttl: int
    otp_max_attempts: int
    lockout_duration: int

    def access_until(self, now: datetime) -> datetime:
        """No access token issued at ``now`` expires later than this (the signer's ``exp`` is
        its own clock read a moment later, in whole seconds: one second covers it)."""
        return now + timedelta(seconds=self.access_token_ttl + 1)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_expires_in": self.refresh_expires_in,
        }


def address_key(email: str) -> str:
    """What per-address budgets are keyed by: a hash of the comparison form, so look-alikes
    share a budget and the store holds no address for an account that does not exist."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


def event(data: BaseModel, user_id: str) -> Envelope:
    return new_envelope(data, service=SERVICE, subject=user_id)


def updated_event(user: User, at: datetime) -> Envelope:
    return event(
        UserUpdated(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=list(user.roles),
            updated_at=at,
        ),
        user.id,
    )


def verified_event(user: User, at: datetime) -> Envelope:
    return event(
        UserVerified(
            user_id=user.id, email=user.email, display_name=user.display_name, verified_at=at
        ),
        user.id,
    )


async def checked_strength(password: str, context: tuple[str, ...], *, deps: Deps) -> None:
    """The costly part of the password policy (in a worker process); raises PasswordRejected."""
    deps.metrics.strength_checked()
    await deps.strength.check(password, context=context)

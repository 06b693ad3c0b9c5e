"""Events the auth service publishes (through its outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from switchyard.envelope import event_type, examples

Role = Literal["customer", "contractor", "admin"]
OtpPurpose = Literal["verify_email", "reset_password"]
USER_ID = "019c3a7e5b2f4d1e8a6b0c9d2e4f6a8b"  # the examples' user: 48-bit ms time + random


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@event_type("auth.user.registered")
class UserRegistered(_Data):
    """A user signed up; the account waits for email verification."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "roles": ["customer"],
            "registered_at": "2026-03-01T12:00:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    roles: list[Role]
    registered_at: datetime


@event_type("auth.otp.requested")
class OtpRequested(_Data):
    """A one-time code was issued; the notification service emails it."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "purpose": "verify_email",
            "code": "493817",
            "expires_at": "2026-03-01T12:10:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    purpose: OtpPurpose
    code: str = Field(pattern=r"^\d{6}$")
    expires_at: datetime


@event_type("auth.user.verified")
class UserVerified(_Data):
    """A user proved ownership of their email address; the account is active."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "verified_at": "2026-03-01T12:03:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    verified_at: datetime


@event_type("auth.user.updated")
class UserUpdated(_Data):
    """A user's profile or roles changed."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada King",
            "roles": ["customer", "contractor"],
            "updated_at": "2026-03-02T09:30:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    roles: list[Role]
    updated_at: datetime


@event_type("auth.password.changed")
class PasswordChanged(_Data):
    """A user's password was changed or reset; every other session was revoked."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "reason": "reset",
            "changed_at": "2026-03-02T10:00:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    reason: Literal["change", "reset"]
    changed_at: datetime


@event_type("auth.user.deleted")
class UserDeleted(_Data):
    """A user deleted their account; every service erases or anonymises their data."""

    model_config = examples({"user_id": USER_ID, "deleted_at": "2026-04-01T08:00:00Z"})

    user_id: str
    deleted_at: datetime


@event_type("auth.session.reuse_detected")
class SessionReuseDetected(_Data):
    """A rotated refresh token was presented again; its whole family was revoked."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "family_id": "5f0c2a9e4b7d4c1f9e8a3b6d2c1e0f47",
            "detected_at": "2026-03-02T11:15:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    family_id: str
    detected_at: datetime


@event_type("auth.session.revoked")
class SessionRevoked(_Data):
    """A session (refresh-token family) ended before its expiry: refuse its access tokens.

    ``expires_at`` is the latest ``exp`` of an access token issued for the session; a verifier
    keeps the session id on its deny-list until then (plus its own clock leeway).
    """

    model_config = examples(
        {
            "user_id": USER_ID,
            "session_id": "5f0c2d9e8b7a4c3d2e1f0a9b8c7d6e5f",
            "expires_at": "2026-03-01T12:15:01Z",
            "revoked_at": "2026-03-01T12:05:00Z",
            "reason": "logout_all",
        }
    )

    user_id: str
    session_id: str
    expires_at: datetime
    revoked_at: datetime
    # logout, logout_all, password_changed, password_reset, roles_changed, reuse_detected,
    # admin_logout_all, account_deleted, account_revoked (more may come: a free string).
    reason: str = Field(min_length=1, max_length=40)


@event_type("auth.login_code.requested")
class LoginCodeRequested(_Data):
    """A sign-in code was issued (the owner's way in, also while password sign-in is locked);
    the notification service emails it."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "code": "KPQ7-M2XD-4TNA-Z9HB",
            "expires_at": "2026-03-01T12:10:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    code: str = Field(pattern=r"^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$")
    expires_at: datetime


@event_type("auth.otp.blocked")
class OtpBlocked(_Data):
    """Too many wrong codes were entered for an account: no code of this purpose is accepted
    until ``blocked_until``; the notification service tells the owner."""

    model_config = examples(
        {
            "user_id": USER_ID,
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "purpose": "reset_password",
            "failed_attempts": 10,
            "blocked_until": "2026-03-01T13:00:00Z",
        }
    )

    user_id: str
    email: EmailStr
    display_name: str
    purpose: OtpPurpose
    failed_attempts: int = Field(ge=1)
    blocked_until: datetime

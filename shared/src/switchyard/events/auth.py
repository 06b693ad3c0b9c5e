"""Events the auth service publishes (through its outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from switchyard.envelope import event_type

Role = Literal["customer", "contractor", "admin"]
OtpPurpose = Literal["verify_email", "reset_password"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@event_type("auth.user.registered")
class UserRegistered(_Data):
    """A user signed up; the account waits for email verification."""

    user_id: str
    email: EmailStr
    display_name: str
    roles: list[Role]
    registered_at: datetime


@event_type("auth.otp.requested")
class OtpRequested(_Data):
    """A one-time code was issued; the notification service emails it."""

    user_id: str
    email: EmailStr
    display_name: str
    purpose: OtpPurpose
    code: str = Field(pattern=r"^\d{6}$")
    expires_at: datetime


@event_type("auth.user.verified")
class UserVerified(_Data):
    """A user proved ownership of their email address; the account is active."""

    user_id: str
    email: EmailStr
    display_name: str
    verified_at: datetime


@event_type("auth.user.updated")
class UserUpdated(_Data):
    """A user's profile or roles changed."""

    user_id: str
    email: EmailStr
    display_name: str
    roles: list[Role]
    updated_at: datetime


@event_type("auth.password.changed")
class PasswordChanged(_Data):
    """A user's password was changed or reset; every other session was revoked."""

    user_id: str
    email: EmailStr
    display_name: str
    reason: Literal["change", "reset"]
    changed_at: datetime


@event_type("auth.user.deleted")
class UserDeleted(_Data):
    """A user deleted their account; every service erases or anonymises their data."""

    user_id: str
    deleted_at: datetime


@event_type("auth.session.reuse_detected")
class SessionReuseDetected(_Data):
    """A rotated refresh token was presented again; its whole family was revoked."""

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

    user_id: str
    email: EmailStr
    display_name: str
    code: str = Field(pattern=r"^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$")
    expires_at: datetime


@event_type("auth.otp.blocked")
class OtpBlocked(_Data):
    """Too many wrong codes were entered for an account: no code of this purpose is accepted
    until ``blocked_until``; the notification service tells the owner."""

    user_id: str
    email: EmailStr
    display_name: str
    purpose: OtpPurpose
    failed_attempts: int = Field(ge=1)
    blocked_until: datetime

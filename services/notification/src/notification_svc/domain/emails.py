"""The emails this service sends, one kind per template, and how each is built from its event."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from notification_svc.domain.preferences import Category
from switchyard.events.auth import (
    LoginCodeRequested,
    OtpBlocked,
    OtpRequested,
    PasswordChanged,
    SessionReuseDetected,
    UserVerified,
)


class EmailKind(enum.StrEnum):
    """One template (text + HTML) per kind; the value is the template's name."""

    SIGNUP_CODE = "signup_code"
    PASSWORD_RESET_CODE = "password_reset_code"
    WELCOME = "welcome"
    PASSWORD_CHANGED = "password_changed"
    SESSION_REUSE_DETECTED = "session_reuse_detected"
    SIGN_IN_CODE = "sign_in_code"
    CODES_BLOCKED = "codes_blocked"
    WEBHOOK_DISABLED = "webhook_disabled"  # to the owner of a subscription that was disabled
    PAYMENT = "payment"  # every payments.* notice: its short text and amounts (domain/notices.py)


CATEGORY_OF: Mapping[EmailKind, Category] = {
    EmailKind.SIGNUP_CODE: "signup",
    EmailKind.WELCOME: "signup",
    EmailKind.PASSWORD_RESET_CODE: "security",
    EmailKind.PASSWORD_CHANGED: "security",
    EmailKind.SESSION_REUSE_DETECTED: "security",
    EmailKind.SIGN_IN_CODE: "security",
    EmailKind.CODES_BLOCKED: "security",
    EmailKind.PAYMENT: "payments",
    EmailKind.WEBHOOK_DISABLED: "security",
}


@dataclass(frozen=True)
class EmailRequest:
    """An email to one user, with what its template needs (may include a one-time code)."""

    kind: EmailKind
    user_id: str
    recipient: str
    display_name: str
    context: Mapping[str, Any]

    @property
    def category(self) -> Category:
        return CATEGORY_OF[self.kind]

    def __repr__(self) -> str:  # the context may hold a one-time code: never print it
        return f"EmailRequest(kind={self.kind.value!r}, user_id={self.user_id!r})"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str

    def __repr__(self) -> str:
        return f"RenderedEmail(subject={self.subject!r})"


@dataclass(frozen=True)
class OutgoingEmail:
    """What the mail adapter sends: rendered content and its addressing."""

    recipient: str
    display_name: str
    content: RenderedEmail
    # Stable per delivery, so a resend after an ambiguous failure carries the same Message-ID.
    reference: str
    # Extra headers, e.g. List-Unsubscribe for non-transactional categories (RFC 8058).
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"OutgoingEmail(reference={self.reference!r})"


def minutes_until(moment: datetime, now: datetime) -> int:
    """Whole minutes left, rounded up, at least 1 (a code valid for 9m59s says "10 minutes")."""
    return max(1, math.ceil((moment - now).total_seconds() / 60))


def _code_email(
    kind: EmailKind, data: OtpRequested | LoginCodeRequested, sent_at: datetime
) -> EmailRequest:
    return EmailRequest(
        kind=kind,
        user_id=data.user_id,
        recipient=str(data.email),
        display_name=data.display_name,
        context={
            "code": data.code,
            "expires_at": data.expires_at,
            "expires_in_minutes": minutes_until(data.expires_at, sent_at),
        },
    )


def otp_email(data: OtpRequested, *, sent_at: datetime) -> EmailRequest:
    kind = (
        EmailKind.SIGNUP_CODE if data.purpose == "verify_email" else EmailKind.PASSWORD_RESET_CODE
    )
    return _code_email(kind, data, sent_at)


def welcome_email(data: UserVerified, *, sent_at: datetime) -> EmailRequest:
    return EmailRequest(
        kind=EmailKind.WELCOME,
        user_id=data.user_id,
        recipient=str(data.email),
        display_name=data.display_name,
        context={"verified_at": data.verified_at},
    )


def password_changed_email(data: PasswordChanged, *, sent_at: datetime) -> EmailRequest:
    return EmailRequest(
        kind=EmailKind.PASSWORD_CHANGED,
        user_id=data.user_id,
        recipient=str(data.email),
        display_name=data.display_name,
        context={"reason": data.reason, "changed_at": data.changed_at},
    )


def session_reuse_email(data: SessionReuseDetected, *, sent_at: datetime) -> EmailRequest:
    return EmailRequest(
        kind=EmailKind.SESSION_REUSE_DETECTED,
        user_id=data.user_id,
        recipient=str(data.email),
        display_name=data.display_name,
        context={"detected_at": data.detected_at},
    )


def sign_in_code_email(data: LoginCodeRequested, *, sent_at: datetime) -> EmailRequest:
    return _code_email(EmailKind.SIGN_IN_CODE, data, sent_at)


CODE_PURPOSE_WORDS = {"verify_email": "email verification", "reset_password": "password reset"}


def codes_blocked_email(data: OtpBlocked, *, sent_at: datetime) -> EmailRequest:
    return EmailRequest(
        kind=EmailKind.CODES_BLOCKED,
        user_id=data.user_id,
        recipient=str(data.email),
        display_name=data.display_name,
        context={
            "purpose": CODE_PURPOSE_WORDS[data.purpose],
            "failed_attempts": data.failed_attempts,
            "blocked_until": data.blocked_until,
            "blocked_for_minutes": minutes_until(data.blocked_until, sent_at),
        },
    )


class EmailBuilder(Protocol):
    """Builds the email an event's data calls for, as sent at ``sent_at``."""

    def __call__(self, data: Any, /, *, sent_at: datetime) -> EmailRequest: ...


# The one list of emailed events: the ``emails`` subscription is bound to exactly these
# event types (derived from the catalog), and each event is built by its function here.
EMAIL_FOR_EVENT: Mapping[type[BaseModel], EmailBuilder] = {
    OtpRequested: otp_email,
    UserVerified: welcome_email,
    PasswordChanged: password_changed_email,
    SessionReuseDetected: session_reuse_email,
    LoginCodeRequested: sign_in_code_email,
    OtpBlocked: codes_blocked_email,
}


def email_for(data: BaseModel, *, now: datetime) -> EmailRequest | None:
    """The email an event calls for, or None when the event calls for none."""
    build = EMAIL_FOR_EVENT.get(type(data))
    return build(data, sent_at=now) if build is not None else None

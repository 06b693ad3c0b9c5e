"""Push notifications: devices, the messages FCM gets, and what its answers mean."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Platform = Literal["android", "ios", "web"]
MAX_DEVICES = 10  # per user; registering an 11th drops the least recently seen
MAX_BATCH = 500  # FCM's limit per multicast


class PushAuthFailed(Exception):
    """The push provider refused our credentials (the token exchange failed): retried."""


@dataclass(frozen=True)
class Device:
    token: str
    user_id: str
    platform: Platform
    created_at: datetime
    last_seen: datetime


@dataclass(frozen=True)
class Push:
    """One message to one device. ``data`` carries the deep-link ids (strings only, FCM's rule)."""

    token: str
    user_id: str
    title: str
    body: str
    data: Mapping[str, str]
    # Android replaces an undelivered message with the same collapse key; iOS groups by thread.
    collapse_key: str
    thread_id: str


class PushOutcome(enum.StrEnum):
    SENT = "sent"
    TOKEN_GONE = "token-gone"  # UNREGISTERED, or INVALID_ARGUMENT about the token: remove it
    TRANSIENT = "transient"  # 429 / 5xx: retry on the bus tiers, honouring Retry-After
    AUTH_FAILED = "auth-failed"  # our credentials: retried (fixing them and replaying works)
    REJECTED = "rejected"  # anything else FCM refuses for good


@dataclass(frozen=True)
class PushResult:
    push: Push
    outcome: PushOutcome
    detail: str
    retry_after: float | None = None


@dataclass(frozen=True)
class PushRequest:
    """A push (and usually an in-app item) for one user, before devices are looked up."""

    user_id: str
    category: str
    template: str
    title: str
    body: str
    data: Mapping[str, str] = field(default_factory=dict)
    collapse_key: str = "switchyard"
    thread_id: str = "switchyard"

"""Refresh tokens: opaque, 256 random bits, grouped in families that rotate on every use.

A token reads ``<family id>.<secret>``; only its SHA-256 is stored. The family
document holds the hash of the one current token and a generation number, so a
rotation is a compare-and-set on one document: exactly one presenter of the
current token wins, and any other token of the family is a replay.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from switchyard.envelope import Envelope

SECRET_BYTES = 32  # 256 bits


@dataclass(frozen=True)
class SessionFamily:
    """A refresh-token family as the commands see it (never its token hashes)."""

    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime  # absolute: rotation does not extend it
    revoked: bool


@dataclass(frozen=True)
class LiveSession:
    """A family that was live when read: what ``auth.session.revoked`` announces."""

    family_id: str
    user_id: str
    access_until: datetime  # the latest expiry of an access token issued for it


# The events to stage with a family's revocation, built from what the family was.
SessionEvents = Callable[[LiveSession], Sequence[Envelope]]


def new_family_id() -> str:
    return secrets.token_hex(16)


def new_refresh_token(family_id: str) -> str:
    return f"{family_id}.{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def family_of(token: str) -> str | None:
    """The family id a token claims, or None when it is not shaped like one of ours."""
    family_id, dot, secret = token.partition(".")
    if not dot or len(family_id) != 32 or len(secret) < 43:
        return None
    try:
        int(family_id, 16)
    except ValueError:
        return None
    return family_id

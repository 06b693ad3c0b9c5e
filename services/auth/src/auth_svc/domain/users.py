"""Users: identity, roles and the account life cycle pending_verification → active → deleted."""

from __future__ import annotations

import os
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

Role = Literal["customer", "contractor", "admin"]
SignupRole = Literal["customer", "contractor"]
ROLES: tuple[Role, ...] = ("customer", "contractor", "admin")


class UserStatus(StrEnum):
    PENDING = "pending_verification"
    ACTIVE = "active"
    DELETED = "deleted"


def normalise_email(email: str) -> str:
    """The address as we store and mail it: trimmed and lower-cased."""
    return email.strip().lower()


def email_key(email: str) -> str:
    """What addresses are compared by: NFKC-normalised and case-folded, so look-alikes such
    as ``ｕni@example.com`` (full-width) or ``STRASSE``/``straße`` are one account."""
    folded = unicodedata.normalize("NFKC", email.strip()).casefold()
    return unicodedata.normalize("NFKC", folded)


# Invisible characters that real names need: joiners (emoji sequences, Persian and Indic
# scripts) and the tag characters of subdivision flags.
_ALLOWED_FORMAT = {"\u200c", "\u200d"} | {chr(c) for c in range(0xE0020, 0xE0080)}


def display_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be shown to other users, or None.

    Control characters, line and paragraph separators and invisible format characters
    (bidi overrides and isolates such as U+202E, zero-width spaces, soft hyphens) are
    refused: they make one name look like another or reorder what follows it on screen.
    """
    for char in name:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Co", "Zl", "Zp") or (
            category == "Cf" and char not in _ALLOWED_FORMAT
        ):
            return (
                f"must not contain control or invisible formatting characters (U+{ord(char):04X})"
            )
    return None


def new_user_id() -> str:
    """An opaque id that sorts by creation time (48-bit ms timestamp + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


_USER_ID = re.compile(r"[0-9a-f]{32}")


def is_user_id(value: str) -> bool:
    """True for ids :func:`new_user_id` makes (a list cursor carrying anything else is not ours)."""
    return _USER_ID.fullmatch(value) is not None


def deleted_email(user_id: str) -> str:
    """What a deleted account's email becomes: unique, not an address, frees the real one."""
    return f"deleted:{user_id}"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    roles: tuple[Role, ...]
    status: UserStatus
    password_hash: str | None
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None = None
    sessions_revoked_at: datetime | None = None
    # Registered again with another password while pending: nobody can tell whose the
    # emailed code confirms, so verification activates no password (see handlers.signup).
    signup_contested: bool = False
    # Counts the writes to the document: a write that emits an event is guarded on the
    # version it read, so the event carries exactly the state the write commits.
    version: int = 0

    @property
    def is_active(self) -> bool:
        return self.status is UserStatus.ACTIVE

    def public(self) -> dict[str, Any]:
        """The user as the API shows it (never the password hash)."""
        return {
            "id": self.id,
            "email": self.email,
            "display_name": self.display_name,
            "roles": list(self.roles),
            "status": self.status.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "verified_at": self.verified_at,
        }

    def token_predates_revocation(self, issued_at: float) -> bool:
        """True when a token issued at ``issued_at`` (epoch seconds) was revoked since."""
        if self.sessions_revoked_at is None:
            return False
        return issued_at < int(self.sessions_revoked_at.timestamp())


@dataclass(frozen=True)
class UserChange:
    """What one write changes on an account; ``None`` leaves a field as it is.

    The repository turns it into its stored shape (``adapters.users``); commands only say
    what changes.
    """

    status: UserStatus | None = None
    email: str | None = None
    display_name: str | None = None
    roles: tuple[Role, ...] | None = None
    password_hash: str | None = None
    # Remove the password (an erased account; a contested sign-up that was verified).
    clear_password: bool = False
    # False: no longer contested (see ``User.signup_contested``).
    signup_contested: bool | None = None
    verified_at: datetime | None = None
    deleted_at: datetime | None = None
    sessions_revoked_at: datetime | None = None
    updated_at: datetime | None = None


def erasure(user_id: str, now: datetime) -> UserChange:
    """What deleting an account changes: it keeps its id and its dates; the address is freed,
    the name, roles and password hash go."""
    return UserChange(
        status=UserStatus.DELETED,
        email=deleted_email(user_id),
        display_name="",
        roles=(),
        clear_password=True,
        deleted_at=now,
        updated_at=now,
    )

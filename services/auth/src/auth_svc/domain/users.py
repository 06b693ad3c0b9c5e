"""Users: identity, roles and the account life cycle pending_verification → active → deleted."""

from __future__ import annotations

import os
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


def deleted_email(user_id: str) -> str:
    """What a deleted account's email becomes: unique, not an address, frees the real one."""
    return f"deleted:{user_id}"


def erased_fields(user_id: str, now: datetime) -> dict[str, Any]:
    """What a deleted account keeps: its id and its dates; the address is freed (the password
    hash is unset as well)."""
    return {
        "status": UserStatus.DELETED.value,
        "email": deleted_email(user_id),
        "display_name": "",
        "roles": [],
        "deleted_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
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

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> User:
        return cls(
            id=document["_id"],
            email=document["email"],
            display_name=document.get("display_name", ""),
            roles=tuple(document.get("roles", ())),
            status=UserStatus(document["status"]),
            password_hash=document.get("password_hash"),
            created_at=document["created_at"],
            updated_at=document.get("updated_at", document["created_at"]),
            verified_at=document.get("verified_at"),
            sessions_revoked_at=document.get("sessions_revoked_at"),
            signup_contested=bool(document.get("signup_contested", False)),
            version=int(document.get("version", 0)),
        )

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

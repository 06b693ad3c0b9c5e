"""Users: identity, roles and the account life cycle pending_verification → active → deleted."""

from __future__ import annotations

import os
import time
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
    """Emails compare case-insensitively: one account per address however it is typed."""
    return email.strip().lower()


def new_user_id() -> str:
    """An opaque id that sorts by creation time (48-bit ms timestamp + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def deleted_email(user_id: str) -> str:
    """What a deleted account's email becomes: unique, not an address, frees the real one."""
    return f"deleted:{user_id}"


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

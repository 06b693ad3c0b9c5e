"""The service's read model of users: where to reach them, kept from auth's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UserStatus = Literal["pending_verification", "active", "deleted"]


@dataclass(frozen=True)
class UserContact:
    user_id: str
    status: UserStatus
    email: str | None = None
    display_name: str | None = None

    @property
    def deleted(self) -> bool:
        return self.status == "deleted"

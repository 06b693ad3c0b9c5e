"""What the commands need from the world, as small interfaces.

The Mongo repositories in ``adapters/`` implement them for the service; the unit tests of
the commands implement them in memory (``tests/unit/fakes.py``). Each write that changes
state takes the events that announce it, so state and events are one write (the outbox).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from auth_svc.domain.attempts import Reservation
from auth_svc.domain.codes import StoredCode
from auth_svc.domain.sessions import LiveSession, SessionEvents, SessionFamily
from auth_svc.domain.users import User, UserChange, UserStatus
from switchyard.envelope import Envelope
from switchyard.tokens import IssuedToken


class Users(Protocol):
    """Accounts, found by id or by any look-alike of their address."""

    async def insert(self, user: User, events: Sequence[Envelope]) -> User:
        """Store a new account; raises ``EmailTaken`` when its address (or a look-alike) has one."""
        ...

    async def by_email(self, email: str) -> User | None: ...

    async def by_id(self, user_id: str) -> User | None: ...

    async def update(
        self,
        user_id: str,
        change: UserChange,
        *,
        expect_status: UserStatus | None = None,
        expect_password_hash: str | None = None,
        expect_version: int | None = None,
        events: Sequence[Envelope] = (),
    ) -> User | None:
        """Apply ``change`` (counting a version) if the account still is what the caller read;
        the updated account, or None when a guard failed."""
        ...

    async def page(
        self, *, limit: int, after: str | None, status: UserStatus | None, role: str | None
    ) -> list[User]:
        """Up to ``limit`` accounts in id (creation) order, after the id ``after``."""
        ...

    async def any_admin(self) -> bool: ...


class Codes(Protocol):
    """One live code per (user, purpose), keyed by ``domain.codes.code_key``."""

    async def issue(
        self,
        key: str,
        *,
        user_id: str,
        purpose: str,
        code_hash: str,
        salt: str,
        now: datetime,
        expires_at: datetime,
        event: Envelope,
    ) -> None:
        """Replace the code of ``key`` with a new one, staging its email's event."""
        ...

    async def extend(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        """Keep the live code valid until ``expires_at``; True when there was one."""
        ...

    async def carry(
        self, code: StoredCode, *, key: str, user_id: str, expires_at: datetime
    ) -> None:
        """Store ``code`` (its hash, salt and tries) as the live code ``key`` of ``user_id``,
        mailing nothing: the owner of the address already has it."""
        ...

    async def live(self, key: str, *, now: datetime) -> StoredCode | None:
        """The live code, counting no try."""
        ...

    async def attempt(self, key: str, *, now: datetime, max_attempts: int) -> StoredCode | None:
        """Count one try against the live code; None when there is none left to try."""
        ...

    async def attempt_nobody(self, purpose: str, *, now: datetime, ttl: float) -> StoredCode:
        """What :meth:`attempt` costs, for an address without an account (never matches)."""
        ...

    async def live_nobody(self, purpose: str, *, now: datetime, ttl: float) -> StoredCode:
        """What :meth:`live` costs, for an address without an account (never matches)."""
        ...

    async def untry(self, key: str, code_hash: str) -> None: ...

    async def consume(self, key: str, code_hash: str) -> bool:
        """Delete the code if it still is ``code_hash``; True for the one caller that did."""
        ...

    async def discard(self, key: str) -> None: ...

    async def discard_for_user(self, user_id: str) -> None: ...


class Sessions(Protocol):
    """Refresh-token families, rotated by compare-and-set."""

    async def create(
        self,
        family_id: str,
        *,
        user_id: str,
        token_hash: str,
        now: datetime,
        expires_at: datetime,
        access_until: datetime,
    ) -> None: ...

    async def rotate(
        self,
        family_id: str,
        *,
        token_hash: str,
        new_hash: str,
        now: datetime,
        access_until: datetime,
    ) -> SessionFamily | None:
        """Swap the current token for a new one; None unless ``token_hash`` is current and live."""
        ...

    async def get(self, family_id: str) -> SessionFamily | None: ...

    async def rotated_away(self, family_id: str, token_hash: str) -> SessionFamily | None:
        """The family, if ``token_hash`` is a token it issued and rotated away."""
        ...

    async def live(self, user_id: str, now: datetime) -> list[LiveSession]: ...

    async def revoked(self, now: datetime, *, after: str | None, limit: int) -> list[LiveSession]:
        """Revoked families whose access tokens may still be alive, by id after ``after``."""
        ...

    async def revoke(
        self,
        family_id: str,
        *,
        reason: str,
        now: datetime,
        token_hash: str | None = None,
        events: SessionEvents = ...,
    ) -> LiveSession | None:
        """Revoke a live family (only if ``token_hash`` is current, when given), staging
        ``events(session)``; the session ended, or None."""
        ...

    async def revoke_all(
        self,
        user_id: str,
        *,
        reason: str,
        now: datetime,
        announced: frozenset[str] = frozenset(),
        events: SessionEvents = ...,
    ) -> list[LiveSession]:
        """Revoke every live family of the user; those not in ``announced`` stage ``events``."""
        ...


class AttemptBudget(Protocol):
    """At most ``limit`` attempts per key and window, reserved before the attempt."""

    limit: int

    async def reserve(self, key: str, now: datetime, *, spaced: bool = True) -> Reservation: ...

    async def refusing(self, key: str, now: datetime) -> Reservation | None:
        """The refusal a reservation would get now because the window is used up; counts nothing."""
        ...

    async def refund(self, key: str, reservation: Reservation) -> None: ...

    async def exhausted(
        self,
        key: str,
        reservation: Reservation,
        *,
        until: datetime | None = None,
        events: Sequence[Envelope] = (),
    ) -> bool:
        """The attempt that took the last slot failed: stage ``events`` once per window (and
        keep the window closed until ``until``); True when this call did it."""
        ...

    async def clear(self, key: str) -> None: ...

    async def release(self, key: str, reservation: Reservation) -> None:
        """Forget the window ``reservation`` was granted in, only if it is still the live one."""
        ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not there is a hash."""
        ...

    def needs_rehash(self, stored_hash: str) -> bool: ...


class StrengthCheck(Protocol):
    def check_length(self, password: str) -> None:
        """Raise ``PasswordRejected`` when too short or too long (cheap)."""
        ...

    async def check(self, password: str, *, context: tuple[str, ...] = ()) -> None:
        """The whole policy; raises ``PasswordRejected`` (or ``ServiceBusy``)."""
        ...


class AccessTokens(Protocol):
    def issue(
        self, subject: str, roles: Iterable[str], *, extra: Mapping[str, Any] | None = None
    ) -> IssuedToken: ...


class Background(Protocol):
    def submit(self, name: str, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``job`` after the answer; False when too much is waiting (dropped, counted)."""
        ...

    async def wait_idle(self) -> None:
        """Until nothing is waiting or running (tests, shutdown)."""
        ...

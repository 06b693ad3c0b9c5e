"""In-memory implementations of the interfaces the auth commands ask for
(``auth_svc.handlers.ports``), for the commands' unit tests.

Each fake keeps the guards of its Mongo repository (a write whose guard fails changes
nothing and stages nothing) and stages the events of each write it commits in an
``InMemoryOutbox``, as the real repositories stage them in the written document. The
store-specific behaviour (the shapes, the races between replicas) is tested against the
embedded store in ``tests/integration`` and ``tests/store``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from auth_svc.domain import codes as otp
from auth_svc.domain.attempts import Reservation
from auth_svc.domain.codes import StoredCode
from auth_svc.domain.errors import EmailTaken
from auth_svc.domain.passwords import PasswordPolicy
from auth_svc.domain.sessions import LiveSession, SessionEvents, SessionFamily
from auth_svc.domain.users import User, UserChange, UserStatus, email_key
from switchyard.envelope import Envelope
from switchyard.testing import InMemoryOutbox


def _no_events(session: LiveSession) -> tuple[()]:
    return ()


def changed(user: User, change: UserChange) -> User:
    """``user`` after ``change`` (what the repository's update writes), one version on."""
    fields: dict[str, Any] = {"version": user.version + 1}
    for name in (
        "status",
        "email",
        "display_name",
        "roles",
        "password_hash",
        "signup_contested",
        "verified_at",
        "sessions_revoked_at",
        "updated_at",
    ):
        value = getattr(change, name)
        if value is not None:
            fields[name] = value
    if change.clear_password:
        fields["password_hash"] = None
    return dataclasses.replace(user, **fields)


class MemoryUsers:
    def __init__(self, outbox: InMemoryOutbox) -> None:
        self.outbox = outbox
        self.accounts: dict[str, User] = {}
        self.deleted_at: dict[str, datetime] = {}

    def _holder(self, email: str) -> User | None:
        key = email_key(email)
        return next((u for u in self.accounts.values() if email_key(u.email) == key), None)

    async def insert(self, user: User, events: Sequence[Envelope]) -> User:
        if user.id in self.accounts or self._holder(user.email) is not None:
            raise EmailTaken(user.email)
        self.accounts[user.id] = user
        self.outbox.stage(events)
        return user

    async def by_email(self, email: str) -> User | None:
        return self._holder(email)

    async def by_id(self, user_id: str) -> User | None:
        return self.accounts.get(user_id)

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
        user = self.accounts.get(user_id)
        if (
            user is None
            or (expect_status is not None and user.status is not expect_status)
            or (expect_password_hash is not None and user.password_hash != expect_password_hash)
            or (expect_version is not None and user.version != expect_version)
        ):
            return None
        if change.email is not None:
            holder = self._holder(change.email)
            if holder is not None and holder.id != user_id:
                raise EmailTaken(change.email)
        updated = self.accounts[user_id] = changed(user, change)
        if change.deleted_at is not None:
            self.deleted_at[user_id] = change.deleted_at
        self.outbox.stage(events)
        return updated

    async def page(
        self, *, limit: int, after: str | None, status: UserStatus | None, role: str | None
    ) -> list[User]:
        found = [
            user
            for user_id, user in sorted(self.accounts.items())
            if (after is None or user_id > after)
            and (status is None or user.status is status)
            and (role is None or role in user.roles)
        ]
        return found[:limit]

    async def any_admin(self) -> bool:
        return any("admin" in user.roles for user in self.accounts.values())


class MemoryCodes:
    def __init__(self, outbox: InMemoryOutbox) -> None:
        self.outbox = outbox
        self.codes: dict[str, StoredCode] = {}

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
        self.codes[key] = StoredCode(key, user_id, purpose, code_hash, salt, 0, now, expires_at)
        self.outbox.stage([event])

    async def extend(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        live = await self.live(key, now=now)
        if live is None:
            return False
        later = max(expires_at, live.expires_at)
        self.codes[key] = dataclasses.replace(live, expires_at=later)
        return True

    async def carry(
        self, code: StoredCode, *, key: str, user_id: str, expires_at: datetime
    ) -> None:
        later = max(expires_at, code.expires_at)
        self.codes[key] = dataclasses.replace(code, key=key, user_id=user_id, expires_at=later)

    async def live(self, key: str, *, now: datetime) -> StoredCode | None:
        code = self.codes.get(key)
        return code if code is not None and code.expires_at > now else None

    async def attempt(self, key: str, *, now: datetime, max_attempts: int) -> StoredCode | None:
        code = await self.live(key, now=now)
        if code is None or code.attempts >= max_attempts:
            return None
        tried = self.codes[key] = dataclasses.replace(code, attempts=code.attempts + 1)
        return tried

    async def attempt_nobody(self, purpose: str, *, now: datetime, ttl: float) -> StoredCode:
        salt = otp.new_salt()
        return StoredCode(
            f"nobody:{purpose}",
            "nobody",
            purpose,
            otp.hash_code(otp.new_salt(), salt),
            salt,
            1,
            now,
            now + timedelta(seconds=ttl),
        )

    async def live_nobody(self, purpose: str, *, now: datetime, ttl: float) -> StoredCode:
        return await self.attempt_nobody(purpose, now=now, ttl=ttl)

    async def untry(self, key: str, code_hash: str) -> None:
        code = self.codes.get(key)
        if code is not None and code.code_hash == code_hash and code.attempts > 0:
            self.codes[key] = dataclasses.replace(code, attempts=code.attempts - 1)

    async def consume(self, key: str, code_hash: str) -> bool:
        code = self.codes.get(key)
        if code is None or code.code_hash != code_hash:
            return False
        del self.codes[key]
        return True

    async def discard(self, key: str) -> None:
        self.codes.pop(key, None)

    async def discard_for_user(self, user_id: str) -> None:
        for key in [key for key, code in self.codes.items() if code.user_id == user_id]:
            del self.codes[key]


@dataclass
class _Family:
    user_id: str
    current_hash: str
    created_at: datetime
    expires_at: datetime
    access_until: datetime
    generation: int = 1
    rotated: set[str] = field(default_factory=set)
    revoked: tuple[datetime, str] | None = None

    def view(self, family_id: str) -> SessionFamily:
        return SessionFamily(
            family_id, self.user_id, self.created_at, self.expires_at, self.revoked is not None
        )


class MemorySessions:
    def __init__(self, outbox: InMemoryOutbox) -> None:
        self.outbox = outbox
        self.families: dict[str, _Family] = {}

    async def create(
        self,
        family_id: str,
        *,
        user_id: str,
        token_hash: str,
        now: datetime,
        expires_at: datetime,
        access_until: datetime,
    ) -> None:
        self.families[family_id] = _Family(user_id, token_hash, now, expires_at, access_until)

    async def rotate(
        self,
        family_id: str,
        *,
        token_hash: str,
        new_hash: str,
        now: datetime,
        access_until: datetime,
    ) -> SessionFamily | None:
        family = self.families.get(family_id)
        if (
            family is None
            or family.current_hash != token_hash
            or family.revoked is not None
            or family.expires_at <= now
        ):
            return None
        family.rotated.add(token_hash)
        family.current_hash = new_hash
        family.access_until = access_until
        family.generation += 1
        return family.view(family_id)

    async def get(self, family_id: str) -> SessionFamily | None:
        family = self.families.get(family_id)
        return family.view(family_id) if family is not None else None

    async def rotated_away(self, family_id: str, token_hash: str) -> SessionFamily | None:
        family = self.families.get(family_id)
        if family is None or token_hash not in family.rotated:
            return None
        return family.view(family_id)

    async def live(self, user_id: str, now: datetime) -> list[LiveSession]:
        return [
            LiveSession(family_id, family.user_id, family.access_until)
            for family_id, family in self.families.items()
            if family.user_id == user_id and family.revoked is None and family.expires_at > now
        ]

    async def revoked(self, now: datetime, *, after: str | None, limit: int) -> list[LiveSession]:
        return [
            LiveSession(family_id, family.user_id, family.access_until)
            for family_id, family in sorted(self.families.items())
            if family.revoked is not None
            and family.revoked[0] <= now
            and family.access_until > now
            and (after is None or family_id > after)
        ][:limit]

    async def revoke(
        self,
        family_id: str,
        *,
        reason: str,
        now: datetime,
        token_hash: str | None = None,
        events: SessionEvents = _no_events,
    ) -> LiveSession | None:
        family = self.families.get(family_id)
        if family is None or family.revoked is not None:
            return None
        if token_hash is not None and family.current_hash != token_hash:
            return None
        session = LiveSession(family_id, family.user_id, family.access_until)
        family.revoked = (now, reason)
        self.outbox.stage(events(session))
        return session

    async def revoke_all(
        self,
        user_id: str,
        *,
        reason: str,
        now: datetime,
        announced: frozenset[str] = frozenset(),
        events: SessionEvents = _no_events,
    ) -> list[LiveSession]:
        ended = []
        for family_id, family in list(self.families.items()):
            if family.user_id != user_id:
                continue
            session = await self.revoke(
                family_id,
                reason=reason,
                now=now,
                events=_no_events if family_id in announced else events,
            )
            if session is not None:
                ended.append(session)
        return ended


@dataclass
class _Budget:
    used: int
    window_ends: datetime
    last_attempt: datetime
    exhausted_window: datetime | None = None


class MemoryBudget:
    def __init__(
        self,
        outbox: InMemoryOutbox,
        *,
        limit: int,
        window: float,
        min_interval: float = 0,
    ) -> None:
        self.outbox = outbox
        self.limit = limit
        self.window = timedelta(seconds=window)
        self.min_interval = timedelta(seconds=min_interval)
        self.budgets: dict[str, _Budget] = {}

    async def reserve(self, key: str, now: datetime, *, spaced: bool = True) -> Reservation:
        spacing = self.min_interval if spaced else timedelta(0)
        budget = self.budgets.get(key)
        spaced_out = budget is None or not spacing or budget.last_attempt <= now - spacing
        if budget is not None and budget.window_ends > now:
            if budget.used < self.limit and spaced_out:  # a slot in the live window
                budget.used += 1
                budget.last_attempt = now
                used = budget.used
                return Reservation(True, used, budget.window_ends, last=used == self.limit)
        elif spaced_out:  # no live window: open one
            until = now + self.window
            self.budgets[key] = _Budget(1, until, now)
            return Reservation(True, 1, until, last=self.limit == 1)
        assert budget is not None
        until = budget.window_ends
        if budget.used < self.limit and spacing:
            until = min(until, budget.last_attempt + spacing)
        return Reservation(False, budget.used, until)

    async def refusing(self, key: str, now: datetime) -> Reservation | None:
        budget = self.budgets.get(key)
        if budget is None or budget.window_ends <= now or budget.used < self.limit:
            return None
        return Reservation(False, budget.used, budget.window_ends)

    async def refund(self, key: str, reservation: Reservation) -> None:
        budget = self.budgets.get(key)
        if budget is not None and budget.window_ends == reservation.until and budget.used > 0:
            budget.used -= 1

    async def exhausted(
        self,
        key: str,
        reservation: Reservation,
        *,
        until: datetime | None = None,
        events: Sequence[Envelope] = (),
    ) -> bool:
        budget = self.budgets.get(key)
        if (
            budget is None
            or budget.window_ends != reservation.until
            or budget.used < self.limit
            or (
                budget.exhausted_window is not None and budget.exhausted_window >= reservation.until
            )
        ):
            return False
        budget.exhausted_window = reservation.until
        if until is not None:
            budget.window_ends = until
        self.outbox.stage(events)
        return True

    async def clear(self, key: str) -> None:
        self.budgets.pop(key, None)

    async def release(self, key: str, reservation: Reservation) -> None:
        budget = self.budgets.get(key)
        if budget is not None and budget.window_ends == reservation.until:
            del self.budgets[key]


class InProcessStrength:
    """The password policy on the calling thread (the service runs it in worker processes)."""

    def __init__(self, policy: PasswordPolicy) -> None:
        self.policy = policy
        self.checked = 0

    def check_length(self, password: str) -> None:
        self.policy.check_length(password)

    async def check(self, password: str, *, context: tuple[str, ...] = ()) -> None:
        self.checked += 1
        self.policy.check(password, context=context)

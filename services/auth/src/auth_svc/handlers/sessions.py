"""Signing in with a password, and the sessions (refresh-token families) that follow."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from auth_svc.domain.attempts import Reservation
from auth_svc.domain.errors import (
    AccountLocked,
    EmailNotVerified,
    InvalidCredentials,
    InvalidRefreshToken,
    SignInInterrupted,
)
from auth_svc.domain.sessions import (
    family_of,
    hash_refresh_token,
    new_family_id,
    new_refresh_token,
)
from auth_svc.domain.users import User, UserChange, UserStatus
from auth_svc.handlers.deps import Deps, TokenPair, address_key, event
from auth_svc.handlers.identity import current_user
from auth_svc.handlers.revocation import end_session, update_and_end_sessions
from switchyard.events.auth import SessionReuseDetected
from switchyard.tokens import Identity

log = logging.getLogger("auth.handlers")


async def open_session(user: User, *, deps: Deps) -> TokenPair:
    """A new refresh-token family and a first access token, for the account as ``user`` read
    it — or ``SignInInterrupted`` when it changed since.

    Check-then-act without a transaction: the family is written first, then the account read
    again. A reset, role change or logout-all that lands before that read is seen here (the
    family is ended and the sign-in refused); one that lands after it finds the family live
    and ends it itself. Either way no session outlives a change made during its sign-in.
    """
    now = deps.clock.now()
    family_id = new_family_id()
    refresh_token = new_refresh_token(family_id)
    await deps.sessions.create(
        family_id,
        user_id=user.id,
        token_hash=hash_refresh_token(refresh_token),
        now=now,
        expires_at=now + timedelta(seconds=deps.refresh_token_ttl),
        access_until=deps.access_until(now),
    )
    current = await deps.users.by_id(user.id)
    if current is None or _changed_for_sessions(user, current):
        await end_session(family_id, reason="sign_in_interrupted", deps=deps)
        raise SignInInterrupted()
    return TokenPair(
        access_token=_access_token(current, family_id, deps=deps),
        refresh_token=refresh_token,
        expires_in=deps.access_token_ttl,
        refresh_expires_in=deps.refresh_token_ttl,
    )


def _changed_for_sessions(read: User, current: User) -> bool:
    """What a session depends on: a change to any of it ends the sessions of the account."""
    return (
        current.status is not read.status
        or current.roles != read.roles
        or current.password_hash != read.password_hash
        or current.sessions_revoked_at != read.sessions_revoked_at
    )


def _access_token(user: User, family_id: str, *, deps: Deps) -> str:
    return deps.tokens.issue(user.id, user.roles, extra={"sid": family_id}).token


# -- password attempts ----------------------------------------------------------------------


async def reserve_password_attempt(email: str, *, deps: Deps) -> Reservation:
    """Count the attempt *before* any password is compared (a guarded increment): however
    many arrive at once, no more than the lockout threshold get to argon2. 429 when none
    is left, for known and unknown addresses alike."""
    now = deps.clock.now()
    reservation = await deps.login_attempts.reserve(address_key(email), now)
    if not reservation.granted:
        raise AccountLocked(reservation.retry_after(now))
    return reservation


async def password_verdict(
    email: str, reservation: Reservation, password: str, stored_hash: str | None, *, deps: Deps
) -> bool:
    """Compare (argon2id; a dummy hash when there is none); a right password clears the count,
    the wrong one that took the last attempt locks the address (and answers 429 itself)."""
    deps.metrics.password_compared()
    if await deps.passwords.verify(stored_hash, password) and stored_hash is not None:
        await deps.login_attempts.clear(address_key(email))
        return True
    if reservation.last:
        now = deps.clock.now()
        locked_until = now + timedelta(seconds=deps.lockout_duration)
        if await deps.login_attempts.exhausted(address_key(email), reservation, until=locked_until):
            deps.metrics.locked_out()
        raise AccountLocked(deps.lockout_duration)
    return False


async def login(*, email: str, password: str, deps: Deps) -> TokenPair:
    """Password sign-in with per-address lockout; unknown emails take the same path and time."""
    try:
        reservation = await reserve_password_attempt(email, deps=deps)
        user = await deps.users.by_email(email)
        stored_hash = user.password_hash if user is not None else None
        right = await password_verdict(email, reservation, password, stored_hash, deps=deps)
    except AccountLocked:
        deps.metrics.login("locked")
        raise
    if not right or user is None:
        deps.metrics.login("invalid_credentials")
        raise InvalidCredentials()
    if user.status is UserStatus.PENDING:
        deps.metrics.login("unverified")
        raise EmailNotVerified()
    try:
        if stored_hash is not None and deps.passwords.needs_rehash(stored_hash):
            user = await _upgrade_hash(user, stored_hash, password, deps=deps)
        pair = await open_session(user, deps=deps)
    except SignInInterrupted:
        deps.metrics.login("interrupted")
        raise
    deps.metrics.login("success")
    return pair


async def _upgrade_hash(user: User, stored_hash: str, password: str, *, deps: Deps) -> User:
    """The cost parameters changed since ``stored_hash`` was made: store a new hash of the
    (just verified) password, and return the account as that write left it.

    The write is guarded on the version read, so any change to the account since makes this
    sign-in stale (``SignInInterrupted``, as in :func:`open_session`) — except another
    sign-in's upgrade of the same hash: of concurrent sign-ins upgrading one hash only one
    write wins, and losing that race is no reason to refuse a right password. So a lost
    guard reads the account again: when only the hash changed and the password still
    matches it, the sign-in goes on from that state."""
    rehashed = await deps.users.update(
        user.id,
        UserChange(password_hash=await deps.passwords.hash(password)),
        expect_password_hash=stored_hash,
        expect_version=user.version,
    )
    if rehashed is not None:
        return rehashed
    current = await deps.users.by_id(user.id)
    if (
        current is None
        or current.password_hash is None
        or current.password_hash == stored_hash
        or _changed_for_sessions(user, replace(current, password_hash=user.password_hash))
    ):
        raise SignInInterrupted()
    # One more comparison, only after a lost race: a reset to another password also
    # changes only the hash as far as this check sees.
    deps.metrics.password_compared()
    if not await deps.passwords.verify(current.password_hash, password):
        raise SignInInterrupted()
    return current


# -- refresh, logout --------------------------------------------------------------------------


async def refresh(*, refresh_token: str, deps: Deps) -> TokenPair:
    """Rotate: the presented token must be its family's current one. A token the family
    issued and rotated away ends the family (reuse); any other token changes nothing."""
    family_id = family_of(refresh_token)
    if family_id is None:
        deps.metrics.refresh("invalid")
        raise InvalidRefreshToken()
    now = deps.clock.now()
    token_hash = hash_refresh_token(refresh_token)
    new_token = new_refresh_token(family_id)
    family = await deps.sessions.rotate(
        family_id,
        token_hash=token_hash,
        new_hash=hash_refresh_token(new_token),
        now=now,
        access_until=deps.access_until(now),
    )
    if family is None:
        await _refused_refresh(family_id, token_hash, now, deps=deps)
        raise InvalidRefreshToken()
    user = await deps.users.by_id(family.user_id)
    revoked_since = user.sessions_revoked_at if user is not None else None
    if (
        user is None
        or not user.is_active
        or (revoked_since is not None and family.created_at < revoked_since)
    ):
        await end_session(family_id, reason="account_revoked", deps=deps)
        deps.metrics.refresh("invalid")
        raise InvalidRefreshToken()
    deps.metrics.refresh("rotated")
    return TokenPair(
        access_token=_access_token(user, family_id, deps=deps),
        refresh_token=new_token,
        expires_in=deps.access_token_ttl,
        refresh_expires_in=max(0, int((family.expires_at - now).total_seconds())),
    )


async def _refused_refresh(family_id: str, token_hash: str, now: datetime, *, deps: Deps) -> None:
    # Only a token this family really issued and rotated away is a replay; the family id
    # alone is no proof (every access token shows it as "sid").
    family = await deps.sessions.rotated_away(family_id, token_hash)
    if family is None or family.revoked or family.expires_at <= now:
        deps.metrics.refresh("invalid")
        return
    # Whoever holds the current token may be the thief, so the whole family goes.
    user = await deps.users.by_id(family.user_id)
    told = []
    if user is not None and user.status is not UserStatus.DELETED:
        told.append(
            event(
                SessionReuseDetected(
                    user_id=user.id,
                    email=user.email,
                    display_name=user.display_name,
                    family_id=family_id,
                    detected_at=now,
                ),
                user.id,
            )
        )
    ended = await end_session(family_id, reason="reuse_detected", deps=deps, with_events=told)
    if ended is None:
        deps.metrics.refresh("invalid")
        return
    deps.metrics.refresh_reused()
    deps.metrics.refresh("reuse_detected")
    log.warning(
        "refresh token reuse detected; session family revoked",
        extra={"user_id": family.user_id, "family_id": family_id},
    )


async def logout(*, refresh_token: str, deps: Deps) -> None:
    """Revoke the presented token's family (only with its current token; silent otherwise)."""
    family_id = family_of(refresh_token)
    if family_id is None:
        return
    await end_session(
        family_id, reason="logout", deps=deps, token_hash=hash_refresh_token(refresh_token)
    )


async def logout_all(*, identity: Identity, deps: Deps) -> None:
    user = await current_user(identity, deps=deps)
    await update_and_end_sessions(user.id, UserChange(), reason="logout_all", deps=deps)

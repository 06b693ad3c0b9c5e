"""Resetting a password with an emailed code, and changing it knowing the current one.

The checks run cheapest first and the same whatever the account: the length, then the code
(wrong for an address without an account, like any wrong code), and only with a right code
the strength check, with the account's own name and address as context.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Literal

from auth_svc.domain.errors import (
    InvalidCode,
    NotAuthenticated,
    ServiceBusy,
    TooManyPasswordChanges,
    WrongPassword,
)
from auth_svc.domain.passwords import PasswordRejected
from auth_svc.domain.users import User, UserChange, UserStatus
from auth_svc.handlers.codes import prove_code, return_code, spend_code
from auth_svc.handlers.deps import (
    Deps,
    TokenPair,
    address_key,
    checked_strength,
    event,
    verified_event,
)
from auth_svc.handlers.identity import current_user
from auth_svc.handlers.revocation import update_and_end_sessions
from auth_svc.handlers.sessions import open_session, password_verdict, reserve_password_attempt
from switchyard.envelope import Envelope
from switchyard.events.auth import PasswordChanged
from switchyard.tokens import Identity


async def reset_password(*, email: str, code: str, new_password: str, deps: Deps) -> None:
    """Set a new password with an emailed code; every session ends. Proves the email too."""
    deps.strength.check_length(new_password)
    user = await deps.users.by_email(email)
    if user is not None and user.status is UserStatus.DELETED:
        user = None
    proof = await prove_code(user, "reset_password", code, deps=deps, email=email)
    user = proof.user
    try:
        await checked_strength(new_password, (user.email, user.display_name), deps=deps)
    except (PasswordRejected, ServiceBusy):
        await return_code(proof, deps=deps)
        raise
    password_hash = await deps.passwords.hash(new_password)
    await spend_code(proof, deps=deps)
    now = deps.clock.now()
    events = [_password_changed(user, "reset", now)]
    # The owner chose this password with a code from their inbox: no longer contested.
    change = UserChange(password_hash=password_hash, signup_contested=False, updated_at=now)
    if user.status is UserStatus.PENDING:
        change = replace(change, status=UserStatus.ACTIVE, verified_at=now)
        events.append(verified_event(user, now))
    updated = await update_and_end_sessions(
        user.id,
        change,
        reason="password_reset",
        deps=deps,
        expect_status=user.status,
        events=events,
    )
    if updated is None:
        raise InvalidCode()
    await deps.codes.discard_for_user(user.id)  # every other code of the account dies
    await deps.login_attempts.clear(address_key(user.email))


async def change_password(
    *, identity: Identity, current_password: str, new_password: str, deps: Deps
) -> TokenPair:
    """Change the password knowing the current one; every session ends and a new one begins."""
    user = await current_user(identity, deps=deps)
    deps.strength.check_length(new_password)
    attempt = await reserve_password_attempt(user.email, deps=deps)
    if not await password_verdict(
        user.email, attempt, current_password, user.password_hash, deps=deps
    ):
        raise WrongPassword()
    await checked_strength(new_password, (user.email, user.display_name), deps=deps)
    # Each change ends every session and mails the owner: a stolen session that knows the
    # password cannot churn it (or cycle back to an old one) more than this an hour.
    change_slot = await deps.password_changes.reserve(user.id, deps.clock.now(), spaced=False)
    if not change_slot.granted:
        raise TooManyPasswordChanges(change_slot.retry_after(deps.clock.now()))
    password_hash = await deps.passwords.hash(new_password)
    now = deps.clock.now()
    updated = await update_and_end_sessions(
        user.id,
        UserChange(password_hash=password_hash, updated_at=now),
        reason="password_changed",
        deps=deps,
        expect_status=UserStatus.ACTIVE,
        expect_password_hash=user.password_hash,
        events=[_password_changed(user, "change", now)],
    )
    if updated is None:
        await deps.password_changes.refund(user.id, change_slot)
        raise NotAuthenticated()
    await deps.codes.discard_for_user(user.id)  # a reset code asked for earlier dies too
    return await open_session(updated, deps=deps)


def _password_changed(user: User, reason: Literal["change", "reset"], now: datetime) -> Envelope:
    changed = PasswordChanged(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        reason=reason,
        changed_at=now,
    )
    return event(changed, user.id)

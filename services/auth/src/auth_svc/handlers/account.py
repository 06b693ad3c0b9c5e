"""The caller's own account: profile and deletion."""

from __future__ import annotations

from dataclasses import replace

from auth_svc.domain.errors import NotAuthenticated, WrongPassword
from auth_svc.domain.users import User, UserChange, UserStatus, erasure
from auth_svc.handlers.deps import WRITE_RETRIES, Deps, address_key, event, updated_event
from auth_svc.handlers.identity import current_user
from auth_svc.handlers.revocation import update_and_end_sessions
from auth_svc.handlers.sessions import password_verdict, reserve_password_attempt
from switchyard.events.auth import UserDeleted
from switchyard.tokens import Identity


async def update_profile(*, identity: Identity, display_name: str, deps: Deps) -> User:
    for _ in range(WRITE_RETRIES):
        user = await current_user(identity, deps=deps)
        if display_name == user.display_name:
            return user
        now = deps.clock.now()
        changed = replace(user, display_name=display_name, updated_at=now)
        updated = await deps.users.update(
            user.id,
            UserChange(display_name=display_name, updated_at=now),
            expect_status=UserStatus.ACTIVE,
            expect_version=user.version,  # the event below is this read plus this change
            events=[updated_event(changed, now)],
        )
        if updated is not None:
            deps.notify_outbox()
            return updated
    raise RuntimeError(f"user {identity.user_id} kept changing; profile not updated")


async def delete_account(*, identity: Identity, password: str, deps: Deps) -> None:
    """Erase the account, with the current password (re-authentication: a stolen access token
    alone must not destroy it): personal data goes, the email is freed, every session ends."""
    user = await current_user(identity, deps=deps)
    attempt = await reserve_password_attempt(user.email, deps=deps)
    if not await password_verdict(user.email, attempt, password, user.password_hash, deps=deps):
        raise WrongPassword()
    now = deps.clock.now()
    deleted = await update_and_end_sessions(
        user.id,
        erasure(user.id, now),
        reason="account_deleted",
        deps=deps,
        expect_status=UserStatus.ACTIVE,
        # As read when the password was checked: a reset, logout-all or role change that
        # landed meanwhile (the owner recovering the account) stops the erasure.
        expect_version=user.version,
        events=[event(UserDeleted(user_id=user.id, deleted_at=now), user.id)],
    )
    if deleted is None:
        raise NotAuthenticated()
    await deps.codes.discard_for_user(user.id)
    await deps.login_attempts.clear(address_key(user.email))

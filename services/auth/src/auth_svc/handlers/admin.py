"""Administration: listing users, changing roles, ending another user's sessions.

Every admin command checks the caller's *stored* roles (a token's roles are what they were
when it was issued), and a role change ends the user's sessions so that new tokens carry
the new roles and the old ones are denied everywhere (``auth.session.revoked``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from auth_svc.domain.errors import RoleChangeRefused, UserNotFound
from auth_svc.domain.users import Role, User, UserChange, UserStatus
from auth_svc.handlers.deps import WRITE_RETRIES, Deps, updated_event
from auth_svc.handlers.identity import current_admin
from auth_svc.handlers.revocation import update_and_end_sessions
from switchyard.tokens import Identity


async def list_users(
    *,
    identity: Identity,
    limit: int,
    after: str | None,
    status: UserStatus | None,
    role: Role | None,
    deps: Deps,
) -> tuple[list[User], str | None]:
    """One page of users in id (creation) order and the id to continue after, if any."""
    await current_admin(identity, deps=deps)
    page = await deps.users.page(limit=limit + 1, after=after, status=status, role=role)
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].id if more and page else None)


async def set_roles(*, identity: Identity, user_id: str, roles: Sequence[Role], deps: Deps) -> User:
    """An admin replaces a user's roles (the only way, besides bootstrap, to make an admin);
    the user's sessions end."""
    admin = await current_admin(identity, deps=deps)
    if user_id == admin.id and "admin" not in roles:
        raise RoleChangeRefused("An admin cannot remove their own admin role.")
    ordered = tuple(sorted(set(roles)))
    for _ in range(WRITE_RETRIES):
        user = await deps.users.by_id(user_id)
        if user is None or user.status is UserStatus.DELETED:
            raise UserNotFound(user_id)
        if user.roles == ordered:
            return user
        now = deps.clock.now()
        changed = replace(user, roles=ordered, updated_at=now)
        updated = await update_and_end_sessions(
            user_id,
            UserChange(roles=ordered, updated_at=now),
            reason="roles_changed",
            deps=deps,
            expect_status=user.status,
            expect_version=user.version,  # the event below is this read plus this change
            events=[updated_event(changed, now)],
        )
        if updated is not None:
            return updated
    raise RuntimeError(f"user {user_id} kept changing; roles not set")


async def end_user_sessions(*, identity: Identity, user_id: str, deps: Deps) -> None:
    """An admin signs a user out everywhere (a lost phone, a suspected takeover)."""
    await current_admin(identity, deps=deps)
    user = await deps.users.by_id(user_id)
    if user is None or user.status is UserStatus.DELETED:
        raise UserNotFound(user_id)
    await update_and_end_sessions(user_id, UserChange(), reason="admin_logout_all", deps=deps)

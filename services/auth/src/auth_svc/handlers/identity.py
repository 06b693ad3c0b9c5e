"""Who is calling: the stored account behind an access token, and its stored roles."""

from __future__ import annotations

from auth_svc.domain.errors import NotAllowed, NotAuthenticated
from auth_svc.domain.users import User
from auth_svc.handlers.deps import Deps
from switchyard.tokens import Identity


async def current_user(identity: Identity, *, deps: Deps) -> User:
    """The active account behind a token; 401 when it is gone or its sessions were revoked."""
    user = await deps.users.by_id(identity.user_id)
    if user is None or not user.is_active or user.token_predates_revocation(identity.issued_at):
        raise NotAuthenticated()
    # Auth's own endpoints also honour revocation at once: the token's session family
    # (claim "sid") must still be live. Other services learn of it from auth.session.revoked.
    family_id = identity.claims.get("sid")
    if isinstance(family_id, str):
        family = await deps.sessions.get(family_id)
        if family is None or family.revoked:
            raise NotAuthenticated()
    return user


async def current_admin(identity: Identity, *, deps: Deps) -> User:
    """The caller, if the store (not only the token) says they are an admin; 403 otherwise.

    A token's roles are what they were when it was issued: a demoted admin's token still
    says admin until it expires.
    """
    user = await current_user(identity, deps=deps)
    if "admin" not in user.roles:
        raise NotAllowed()
    return user

"""Auth commands: plain async functions taking their dependencies as one keyword bundle.

Every state change and its events are one document write (the outbox, DESIGN §2); where a
command touches two collections the user document is the source of truth
(``sessions_revoked_at``, ``status``) and the second write is clean-up that the readers do
not depend on. One module per concern; this package re-exports the commands.
"""

from auth_svc.handlers.account import delete_account, update_profile
from auth_svc.handlers.admin import end_user_sessions, list_users, set_roles
from auth_svc.handlers.codes import request_code, sign_in_with_code
from auth_svc.handlers.deps import Deps, TokenPair
from auth_svc.handlers.identity import current_admin, current_user
from auth_svc.handlers.passwords import change_password, reset_password
from auth_svc.handlers.revocation import revoked_sessions
from auth_svc.handlers.sessions import login, logout, logout_all, open_session, refresh
from auth_svc.handlers.signup import (
    SIGNUP_LEASE_SECONDS,
    bootstrap_admin,
    register,
    verify_email,
)

__all__ = [
    "SIGNUP_LEASE_SECONDS",
    "Deps",
    "TokenPair",
    "bootstrap_admin",
    "change_password",
    "current_admin",
    "current_user",
    "delete_account",
    "end_user_sessions",
    "list_users",
    "login",
    "logout",
    "logout_all",
    "open_session",
    "refresh",
    "register",
    "request_code",
    "reset_password",
    "revoked_sessions",
    "set_roles",
    "sign_in_with_code",
    "update_profile",
    "verify_email",
]

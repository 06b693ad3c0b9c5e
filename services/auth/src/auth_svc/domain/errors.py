"""What can go wrong in an auth command, in the domain's words (the HTTP layer maps them)."""

from __future__ import annotations


class AuthError(Exception):
    """Base of the failures a client can cause."""


class EmailTaken(AuthError):
    pass


class InvalidCredentials(AuthError):
    """Unknown email or wrong password: deliberately indistinguishable."""


class EmailNotVerified(AuthError):
    pass


class AccountLocked(AuthError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"locked for {retry_after:.0f}s")
        self.retry_after = retry_after


class TooManyPasswordChanges(AuthError):
    """The account's password changes of the hour are used up."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"no change for {retry_after:.0f}s")
        self.retry_after = retry_after


class InvalidCode(AuthError):
    """Wrong, expired, used up or never issued: deliberately indistinguishable."""


class InvalidRefreshToken(AuthError):
    pass


class SignInInterrupted(AuthError):
    """The account changed (password, roles, status, revoked sessions) while the sign-in was
    being checked: a session opened now would carry what the change just ended."""


class NotAuthenticated(AuthError):
    """The access token verified but its session or account no longer exists."""


class WrongPassword(AuthError):
    pass


class UserNotFound(AuthError):
    pass


class RoleChangeRefused(AuthError):
    pass


class NotAllowed(AuthError):
    """The account (as stored, whatever its token says) lacks the role the action needs."""


class ServiceBusy(AuthError):
    """Too much CPU-bound work is queued (password-strength checks): try again shortly."""

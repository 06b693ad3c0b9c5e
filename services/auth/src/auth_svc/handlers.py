"""Auth commands: plain async functions taking their dependencies as one keyword bundle.

Every state change and its events are one document write (the outbox, DESIGN §2);
where a command touches two collections the user document is the source of truth
(``sessions_revoked_at``, ``status``) and the second write is clean-up that the
readers do not depend on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from auth_svc.adapters.codes import CodeRepository
from auth_svc.adapters.passwords import Passwords
from auth_svc.adapters.sessions import SessionRepository
from auth_svc.adapters.signing_keys import Signer
from auth_svc.adapters.throttle import LoginThrottle
from auth_svc.adapters.users import UserRepository
from auth_svc.domain import codes as otp
from auth_svc.domain.clock import Clock
from auth_svc.domain.errors import (
    AccountLocked,
    EmailNotVerified,
    EmailTaken,
    InvalidCode,
    InvalidCredentials,
    InvalidRefreshToken,
    NotAuthenticated,
    RoleChangeRefused,
    UserNotFound,
    WrongPassword,
)
from auth_svc.domain.passwords import PasswordPolicy
from auth_svc.domain.sessions import (
    family_of,
    hash_refresh_token,
    new_family_id,
    new_refresh_token,
)
from auth_svc.domain.users import (
    User,
    UserStatus,
    deleted_email,
    new_user_id,
    normalise_email,
)
from auth_svc.metrics import AuthMetrics
from switchyard.envelope import Envelope, new_envelope
from switchyard.events.auth import (
    OtpRequested,
    PasswordChanged,
    SessionReuseDetected,
    UserDeleted,
    UserRegistered,
    UserUpdated,
    UserVerified,
)
from switchyard.idempotency import Progress
from switchyard.tokens import Identity

log = logging.getLogger("auth.handlers")

SERVICE = "auth"
# A write guarded on the version it read retries with a fresh read when another write won.
WRITE_RETRIES = 20


@dataclass
class Deps:
    """Everything the commands need, built once in ``create_app``."""

    clock: Clock
    users: UserRepository
    codes: CodeRepository
    sessions: SessionRepository
    throttle: LoginThrottle
    passwords: Passwords
    policy: PasswordPolicy
    signer: Signer
    metrics: AuthMetrics
    notify_outbox: Callable[[], None]
    access_token_ttl: int
    refresh_token_ttl: int
    otp_ttl: int
    otp_max_attempts: int
    otp_resend_cooldown: int


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_expires_in": self.refresh_expires_in,
        }


def _event(data: BaseModel, user_id: str) -> Envelope:
    return new_envelope(data, service=SERVICE, subject=user_id)


def _updated(user: User, at: datetime) -> Envelope:
    return _event(
        UserUpdated(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=list(user.roles),  # type: ignore[arg-type]
            updated_at=at,
        ),
        user.id,
    )


def _verified(user: User, at: datetime) -> Envelope:
    return _event(
        UserVerified(
            user_id=user.id, email=user.email, display_name=user.display_name, verified_at=at
        ),
        user.id,
    )


# -- sign-up and codes ---------------------------------------------------------------------


async def register(
    *,
    email: str,
    password: str,
    display_name: str,
    role: str,
    deps: Deps,
    progress: Progress | None = None,
) -> User:
    """Create a pending account and email it a verification code.

    With ``progress`` (an ``Idempotency-Key``), the created account is recorded as soon as
    it exists; a retry after a later failure (the code write) rolls forward from it.
    """
    email = normalise_email(email)
    resumed = await _resume_registration(progress, email, deps=deps)
    if resumed is not None:
        return resumed
    deps.policy.check(password, context=(email, display_name))
    password_hash = await deps.passwords.hash(password)
    now = deps.clock.now()
    user_id = new_user_id()
    document = {
        "_id": user_id,
        "email": email,
        "display_name": display_name,
        "roles": [role],
        "status": UserStatus.PENDING.value,
        "password_hash": password_hash,
        "created_at": now,
        "updated_at": now,
        "verified_at": None,
        "sessions_revoked_at": None,
    }
    event = _event(
        UserRegistered(
            user_id=user_id,
            email=email,
            display_name=display_name,
            roles=[role],  # type: ignore[list-item]
            registered_at=now,
        ),
        user_id,
    )
    user = await deps.users.insert(document, [event])
    if progress is not None:
        await progress.committed(user_id=user.id)
    deps.metrics.registrations.labels(deps.metrics.service).inc()
    await issue_code(user, "verify_email", deps=deps)
    deps.notify_outbox()
    return user


async def _resume_registration(progress: Progress | None, email: str, *, deps: Deps) -> User | None:
    """The account an earlier attempt of this request created, its code issued now (the
    cooldown makes this a no-op when the code went out after all)."""
    user_id = (progress.effect or {}).get("user_id") if progress is not None else None
    if not isinstance(user_id, str):
        return None
    user = await deps.users.by_id(user_id)
    if user is None or user.email != email or user.status is not UserStatus.PENDING:
        return None
    await issue_code(user, "verify_email", deps=deps)
    deps.notify_outbox()
    return user


async def issue_code(user: User, purpose: otp.Purpose, *, deps: Deps) -> bool:
    """Replace the user's code for ``purpose`` unless one was sent within the cooldown."""
    code = otp.new_code()
    salt = otp.new_salt()
    now = deps.clock.now()
    expires_at = now + timedelta(seconds=deps.otp_ttl)
    event = _event(
        OtpRequested(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            purpose=purpose,
            code=code,
            expires_at=expires_at,
        ),
        user.id,
    )
    issued = await deps.codes.issue(
        otp.code_key(user.id, purpose),
        user_id=user.id,
        purpose=purpose,
        code_hash=otp.hash_code(code, salt),
        salt=salt,
        now=now,
        expires_at=expires_at,
        cooldown=deps.otp_resend_cooldown,
        event=event,
    )
    if issued:
        deps.metrics.code_issued(purpose)
        deps.notify_outbox()
    return issued


async def resend_code(*, email: str, purpose: otp.Purpose, deps: Deps) -> None:
    """Send a new code when the account is in a state that needs one; silent otherwise."""
    user = await deps.users.by_email(normalise_email(email))
    if user is None:
        return
    wanted = (
        user.status is UserStatus.PENDING
        if purpose == "verify_email"
        else user.status in (UserStatus.PENDING, UserStatus.ACTIVE)
    )
    if wanted:
        await issue_code(user, purpose, deps=deps)


async def _use_code(user: User, purpose: otp.Purpose, code: str, *, deps: Deps) -> None:
    """Check and consume a code: every try counts, the last wrong try kills it."""
    key = otp.code_key(user.id, purpose)
    record = await deps.codes.attempt(key, now=deps.clock.now(), max_attempts=deps.otp_max_attempts)
    if record is None:
        raise InvalidCode()
    stored = record["code"]
    if not otp.code_matches(code, stored["salt"], stored["hash"]):
        if record["attempts"] >= deps.otp_max_attempts:
            await deps.codes.discard(key)
        raise InvalidCode()
    if not await deps.codes.consume(key, stored["hash"]):
        raise InvalidCode()  # a concurrent request used it first


async def verify_email(*, email: str, code: str, deps: Deps) -> TokenPair:
    """Prove the address with the emailed code; the account becomes active and signs in."""
    user = await deps.users.by_email(normalise_email(email))
    if user is None or user.status is not UserStatus.PENDING:
        raise InvalidCode()
    await _use_code(user, "verify_email", code, deps=deps)
    now = deps.clock.now()
    verified = _verified(user, now)
    active = await deps.users.update(
        user.id,
        expect={"status": UserStatus.PENDING.value},
        set_fields={"status": UserStatus.ACTIVE.value, "verified_at": now, "updated_at": now},
        events=[verified],
    )
    if active is None:
        raise InvalidCode()
    deps.notify_outbox()
    return await open_session(active, deps=deps)


# -- sessions -------------------------------------------------------------------------------


async def open_session(user: User, *, deps: Deps) -> TokenPair:
    """A new refresh-token family and a first access token."""
    now = deps.clock.now()
    family_id = new_family_id()
    refresh_token = new_refresh_token(family_id)
    await deps.sessions.create(
        family_id,
        user_id=user.id,
        token_hash=hash_refresh_token(refresh_token),
        now=now,
        expires_at=now + timedelta(seconds=deps.refresh_token_ttl),
    )
    return TokenPair(
        access_token=_access_token(user, family_id, deps=deps),
        refresh_token=refresh_token,
        expires_in=deps.access_token_ttl,
        refresh_expires_in=deps.refresh_token_ttl,
    )


def _access_token(user: User, family_id: str, *, deps: Deps) -> str:
    return deps.signer.signer().issue(user.id, user.roles, extra={"sid": family_id}).token


async def login(*, email: str, password: str, deps: Deps) -> TokenPair:
    """Password sign-in with per-account lockout; unknown emails take the same path and time."""
    email = normalise_email(email)
    now = deps.clock.now()
    locked_for = await deps.throttle.locked_for(email, now)
    if locked_for > 0:
        deps.metrics.login("locked")
        raise AccountLocked(locked_for)
    user = await deps.users.by_email(email)
    stored_hash = user.password_hash if user is not None else None
    if not await deps.passwords.verify(stored_hash, password) or user is None:
        lock = await deps.throttle.record_failure(email, now)
        if lock > 0:
            deps.metrics.lockouts.labels(deps.metrics.service).inc()
            deps.metrics.login("locked")
            raise AccountLocked(lock)
        deps.metrics.login("invalid_credentials")
        raise InvalidCredentials()
    await deps.throttle.reset(email)
    if user.status is UserStatus.PENDING:
        deps.metrics.login("unverified")
        raise EmailNotVerified()
    if stored_hash is not None and deps.passwords.needs_rehash(stored_hash):
        # The cost parameters changed since this hash was made: upgrade it now.
        await deps.users.update(
            user.id,
            expect={"password_hash": stored_hash},
            set_fields={"password_hash": await deps.passwords.hash(password)},
        )
    deps.metrics.login("success")
    return await open_session(user, deps=deps)


async def refresh(*, refresh_token: str, deps: Deps) -> TokenPair:
    """Rotate: the presented token must be its family's current one, else the family dies."""
    family_id = family_of(refresh_token)
    if family_id is None:
        deps.metrics.refresh("invalid")
        raise InvalidRefreshToken()
    now = deps.clock.now()
    token_hash = hash_refresh_token(refresh_token)
    new_token = new_refresh_token(family_id)
    family = await deps.sessions.rotate(
        family_id, token_hash=token_hash, new_hash=hash_refresh_token(new_token), now=now
    )
    if family is None:
        await _refused_refresh(family_id, token_hash, now, deps=deps)
        raise InvalidRefreshToken()
    user = await deps.users.by_id(family["user_id"])
    revoked_since = user.sessions_revoked_at if user is not None else None
    if (
        user is None
        or not user.is_active
        or (revoked_since is not None and family["created_at"] < revoked_since)
    ):
        await deps.sessions.revoke(family_id, reason="account_revoked", now=now)
        deps.metrics.refresh("invalid")
        raise InvalidRefreshToken()
    deps.metrics.refresh("rotated")
    return TokenPair(
        access_token=_access_token(user, family_id, deps=deps),
        refresh_token=new_token,
        expires_in=deps.access_token_ttl,
        refresh_expires_in=max(0, int((family["expires_at"] - now).total_seconds())),
    )


async def _refused_refresh(family_id: str, token_hash: str, now: datetime, *, deps: Deps) -> None:
    family = await deps.sessions.get(family_id)
    live = (
        family is not None
        and family.get("revoked") is None
        and family["expires_at"] > now
        and family["current_hash"] != token_hash
    )
    if not live or family is None:
        deps.metrics.refresh("invalid")
        return
    # A live family and a token that is not its current one: a rotated token came back.
    # Whoever holds the current token may be the thief, so the whole family goes.
    user = await deps.users.by_id(family["user_id"])
    events = []
    if user is not None and user.status is not UserStatus.DELETED:
        events.append(
            _event(
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
    if await deps.sessions.revoke(family_id, reason="reuse_detected", now=now, events=events):
        deps.metrics.reuse_detected.labels(deps.metrics.service).inc()
        deps.metrics.refresh("reuse_detected")
        deps.notify_outbox()
        log.warning(
            "refresh token reuse detected; session family revoked",
            extra={"user_id": family["user_id"], "family_id": family_id},
        )
    else:
        deps.metrics.refresh("invalid")


async def logout(*, refresh_token: str, deps: Deps) -> None:
    """Revoke the presented token's family (only with its current token; silent otherwise)."""
    family_id = family_of(refresh_token)
    if family_id is None:
        return
    await deps.sessions.revoke(
        family_id,
        reason="logout",
        now=deps.clock.now(),
        token_hash=hash_refresh_token(refresh_token),
    )


async def revoke_all_sessions(user: User, *, reason: str, deps: Deps) -> None:
    """Clean-up of every family after the user document already says "revoked since"."""
    await deps.sessions.revoke_all(user.id, reason=reason, now=deps.clock.now())


async def logout_all(*, identity: Identity, deps: Deps) -> None:
    user = await current_user(identity, deps=deps)
    now = deps.clock.now()
    await deps.users.update(user.id, set_fields={"sessions_revoked_at": now})
    await revoke_all_sessions(user, reason="logout_all", deps=deps)


# -- passwords ------------------------------------------------------------------------------


async def forgot_password(*, email: str, deps: Deps) -> None:
    await resend_code(email=email, purpose="reset_password", deps=deps)


async def reset_password(*, email: str, code: str, new_password: str, deps: Deps) -> None:
    """Set a new password with an emailed code; every session ends. Proves the email too."""
    email = normalise_email(email)
    user = await deps.users.by_email(email)
    if user is not None and user.status is UserStatus.DELETED:
        user = None
    # The policy answers before a code is spent, and for unknown emails too: a weak
    # password must not tell an account apart from no account (no enumeration).
    deps.policy.check(new_password, context=(email, user.display_name) if user else (email,))
    if user is None:
        raise InvalidCode()
    await _use_code(user, "reset_password", code, deps=deps)
    password_hash = await deps.passwords.hash(new_password)
    now = deps.clock.now()
    events = [
        _event(
            PasswordChanged(
                user_id=user.id,
                email=user.email,
                display_name=user.display_name,
                reason="reset",
                changed_at=now,
            ),
            user.id,
        )
    ]
    fields: dict[str, Any] = {
        "password_hash": password_hash,
        "sessions_revoked_at": now,
        "updated_at": now,
    }
    if user.status is UserStatus.PENDING:
        fields.update(status=UserStatus.ACTIVE.value, verified_at=now)
        events.append(_verified(user, now))
    updated = await deps.users.update(
        user.id, expect={"status": user.status.value}, set_fields=fields, events=events
    )
    if updated is None:
        raise InvalidCode()
    deps.notify_outbox()
    await revoke_all_sessions(updated, reason="password_reset", deps=deps)
    await deps.throttle.reset(email)


async def change_password(
    *, identity: Identity, current_password: str, new_password: str, deps: Deps
) -> TokenPair:
    """Change the password knowing the current one; every session ends and a new one begins."""
    user = await current_user(identity, deps=deps)
    now = deps.clock.now()
    locked_for = await deps.throttle.locked_for(user.email, now)
    if locked_for > 0:
        raise AccountLocked(locked_for)
    if not await deps.passwords.verify(user.password_hash, current_password):
        lock = await deps.throttle.record_failure(user.email, now)
        if lock > 0:
            deps.metrics.lockouts.labels(deps.metrics.service).inc()
            raise AccountLocked(lock)
        raise WrongPassword()
    deps.policy.check(new_password, context=(user.email, user.display_name))
    password_hash = await deps.passwords.hash(new_password)
    event = _event(
        PasswordChanged(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            reason="change",
            changed_at=now,
        ),
        user.id,
    )
    updated = await deps.users.update(
        user.id,
        expect={"status": UserStatus.ACTIVE.value, "password_hash": user.password_hash},
        set_fields={"password_hash": password_hash, "sessions_revoked_at": now, "updated_at": now},
        events=[event],
    )
    if updated is None:
        raise NotAuthenticated()
    deps.notify_outbox()
    await revoke_all_sessions(updated, reason="password_change", deps=deps)
    return await open_session(updated, deps=deps)


# -- the account ----------------------------------------------------------------------------


async def current_user(identity: Identity, *, deps: Deps) -> User:
    """The active account behind a token; 401 when it is gone or its sessions were revoked."""
    user = await deps.users.by_id(identity.user_id)
    if user is None or not user.is_active or user.token_predates_revocation(identity.issued_at):
        raise NotAuthenticated()
    # Auth's own endpoints also honour revocation at once: the token's session family
    # (claim "sid") must still be live. Other services accept it until it expires.
    family_id = identity.claims.get("sid")
    if isinstance(family_id, str):
        family = await deps.sessions.get(family_id)
        if family is None or family.get("revoked") is not None:
            raise NotAuthenticated()
    return user


async def update_profile(*, identity: Identity, display_name: str, deps: Deps) -> User:
    for _ in range(WRITE_RETRIES):
        user = await current_user(identity, deps=deps)
        if display_name == user.display_name:
            return user
        now = deps.clock.now()
        changed = replace(user, display_name=display_name, updated_at=now)
        updated = await deps.users.update(
            user.id,
            expect={"status": UserStatus.ACTIVE.value},
            expect_version=user.version,  # the event below is this read plus this change
            set_fields={"display_name": display_name, "updated_at": now},
            events=[_updated(changed, now)],
        )
        if updated is not None:
            deps.notify_outbox()
            return updated
    raise RuntimeError(f"user {identity.user_id} kept changing; profile not updated")


async def delete_account(*, identity: Identity, deps: Deps) -> None:
    """Erase the account: personal data goes, the email is freed, every session ends."""
    user = await current_user(identity, deps=deps)
    now = deps.clock.now()
    deleted = await deps.users.update(
        user.id,
        expect={"status": UserStatus.ACTIVE.value},
        set_fields={
            "status": UserStatus.DELETED.value,
            "email": deleted_email(user.id),
            "display_name": "",
            "roles": [],
            "deleted_at": now,
            "updated_at": now,
            "sessions_revoked_at": now,
        },
        unset_fields=["password_hash"],
        events=[_event(UserDeleted(user_id=user.id, deleted_at=now), user.id)],
    )
    if deleted is None:
        raise NotAuthenticated()
    deps.notify_outbox()
    await revoke_all_sessions(deleted, reason="account_deleted", deps=deps)
    await deps.codes.discard_for_user(user.id)
    await deps.throttle.reset(user.email)


# -- administration -------------------------------------------------------------------------


async def list_users(
    *, limit: int, after: str | None, status: str | None, role: str | None, deps: Deps
) -> tuple[list[User], str | None]:
    """One page of users in id (creation) order and the id to continue after, if any."""
    page = await deps.users.page(limit=limit + 1, after=after, status=status, role=role)
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].id if more and page else None)


async def set_roles(*, identity: Identity, user_id: str, roles: list[str], deps: Deps) -> User:
    """An admin replaces a user's roles (the only way, besides bootstrap, to make an admin)."""
    if user_id == identity.user_id and "admin" not in roles:
        raise RoleChangeRefused("An admin cannot remove their own admin role.")
    ordered = sorted(set(roles))
    for _ in range(WRITE_RETRIES):
        user = await deps.users.by_id(user_id)
        if user is None or user.status is UserStatus.DELETED:
            raise UserNotFound(user_id)
        if list(user.roles) == ordered:
            return user
        now = deps.clock.now()
        changed = replace(user, roles=tuple(ordered), updated_at=now)
        updated = await deps.users.update(
            user_id,
            expect={"status": user.status.value},
            expect_version=user.version,  # the event below is this read plus this change
            set_fields={"roles": ordered, "updated_at": now},
            events=[_updated(changed, now)],
        )
        if updated is not None:
            deps.notify_outbox()
            return updated
    raise RuntimeError(f"user {user_id} kept changing; roles not set")


async def bootstrap_admin(
    *, email: str, password: str, display_name: str, deps: Deps
) -> User | None:
    """Create (or promote) the first admin when no admin exists yet; None when one does."""
    if await deps.users.any_admin():
        return None
    email = normalise_email(email)
    existing = await deps.users.by_email(email)
    now = deps.clock.now()
    if existing is not None:
        promoted = replace(existing, roles=tuple(sorted({*existing.roles, "admin"})))
        fields: dict[str, Any] = {"roles": list(promoted.roles), "updated_at": now}
        events = [_updated(promoted, now)]
        if existing.status is UserStatus.PENDING:
            # Whoever registered this address never proved it (anyone may sign up with the
            # operator's email): the password they chose must not open an admin account.
            deps.policy.check(password, context=(email, existing.display_name))
            fields.update(
                status=UserStatus.ACTIVE.value,
                verified_at=now,
                password_hash=await deps.passwords.hash(password),
            )
            events.append(_verified(existing, now))
        updated = await deps.users.update(
            existing.id,
            expect={"status": existing.status.value},
            expect_version=existing.version,
            set_fields=fields,
            events=events,
        )
        if updated is None:
            return None  # changed under us (another replica bootstrapped it)
        deps.notify_outbox()
        log.info("promoted the bootstrap admin", extra={"user_id": existing.id})
        return updated
    deps.policy.check(password, context=(email, display_name))
    user_id = new_user_id()
    document = {
        "_id": user_id,
        "email": email,
        "display_name": display_name,
        "roles": ["admin"],
        "status": UserStatus.ACTIVE.value,
        "password_hash": await deps.passwords.hash(password),
        "created_at": now,
        "updated_at": now,
        "verified_at": now,
        "sessions_revoked_at": None,
    }
    events = [
        _event(
            UserRegistered(
                user_id=user_id,
                email=email,
                display_name=display_name,
                roles=["admin"],
                registered_at=now,
            ),
            user_id,
        ),
        _event(
            UserVerified(user_id=user_id, email=email, display_name=display_name, verified_at=now),
            user_id,
        ),
    ]
    try:
        user = await deps.users.insert(document, events)
    except EmailTaken:
        return None  # another replica bootstrapped the same admin at the same moment
    deps.notify_outbox()
    log.info("created the bootstrap admin", extra={"user_id": user_id})
    return user

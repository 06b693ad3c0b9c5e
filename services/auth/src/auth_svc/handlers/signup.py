"""Signing up: registration, email verification, and the bootstrap admin.

Registering an address whose account is still pending replaces that account (it is deleted
and a new one made, answered exactly like a first registration): the mailbox owner, who
gets the code, wins over whoever registered first. Nobody can tell whose sign-up the code
confirms, though — the owner may have signed up first and an attacker after — so when the
pending account was registered again with a *different* password ("contested"), verifying
it activates no password at all: the owner is signed in by the verification itself and sets
a password with a reset code (or signs in by code). Registering a verified address answers
409 (see the README for the trade-off).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

from auth_svc.domain import codes as otp
from auth_svc.domain.errors import EmailTaken, InvalidCode, ServiceBusy
from auth_svc.domain.users import (
    Role,
    SignupRole,
    User,
    UserChange,
    UserStatus,
    erasure,
    new_user_id,
    normalise_email,
)
from auth_svc.handlers.codes import issue_code, prove_code, spend_code
from auth_svc.handlers.deps import (
    Deps,
    TokenPair,
    address_key,
    checked_strength,
    event,
    updated_event,
    verified_event,
)
from auth_svc.handlers.revocation import update_and_end_sessions
from auth_svc.handlers.sessions import open_session
from switchyard.events.auth import UserDeleted, UserRegistered
from switchyard.idempotency import Progress

log = logging.getLogger("auth.handlers")

# A registration that finds the account changed under it (verified, replaced) reads again.
REGISTER_ATTEMPTS = 3
# Registrations of one address run one at a time under a lease: how long it lasts should
# its holder die, and how long another registration waits for it before answering 503.
SIGNUP_LEASE_SECONDS = 30
SIGNUP_LEASE_WAIT = 10.0
# A waiter asks for the lease again after a pause doubling from the first to the last
# (each drawn from its upper half).
LEASE_POLL_FIRST = 0.01
LEASE_POLL_MAX = 0.25


async def register(
    *,
    email: str,
    password: str,
    display_name: str,
    role: SignupRole,
    deps: Deps,
    progress: Progress | None = None,
) -> User:
    """Create a pending account (replacing a pending one of the same address) and email it a
    verification code.

    With ``progress`` (an ``Idempotency-Key``), the new account is recorded as soon as it
    exists; a retry after a later failure (the code write) rolls forward from it.
    """
    email = normalise_email(email)
    resumed = await _resume(progress, email, deps=deps)
    if resumed is not None:
        return resumed
    deps.strength.check_length(password)
    existing = await deps.users.by_email(email)
    if existing is not None and existing.status is not UserStatus.PENDING:
        raise EmailTaken(email)
    await checked_strength(password, (email, display_name), deps=deps)
    password_hash = await deps.passwords.hash(password)
    # Read, compare, replace and insert under the address's lease: without it a racer that
    # read "no account" could insert into the gap between another's replace and insert, and
    # its account would not be contested though someone else registered a password first.
    async with _signup_lease(email, deps=deps):
        for _ in range(REGISTER_ATTEMPTS):
            existing = await deps.users.by_email(email)
            if existing is not None and existing.status is not UserStatus.PENDING:
                raise EmailTaken(email)
            contested = False
            last_code = None
            if existing is not None:
                contested = existing.signup_contested or not await deps.passwords.verify(
                    existing.password_hash, password
                )
                last_code = await deps.codes.live(
                    otp.code_key(existing.id, "verify_email"), now=deps.clock.now()
                )
                if not await _discard_pending(existing, deps=deps):
                    continue  # verified (or replaced by a lease-less writer) meanwhile
            try:
                user = await _insert(email, password_hash, display_name, role, contested, deps=deps)
            except EmailTaken:
                continue
            if progress is not None:
                await progress.committed(user_id=user.id)
            deps.metrics.registered()
            if not await issue_code(user, "verify_email", deps=deps, cooldown=False):
                await _keep_last_code(last_code, user, deps=deps)
            deps.notify_outbox()
            return user
    raise EmailTaken(email)


@asynccontextmanager
async def _signup_lease(email: str, *, deps: Deps) -> AsyncIterator[None]:
    """Hold the address's registration lease (a budget of one that expires after
    ``SIGNUP_LEASE_SECONDS``, should a holder die); wait for it up to ``SIGNUP_LEASE_WAIT``.

    Released guarded on the holder's own window: a holder stalled past its lease, whose
    successor holds a new one, releases nothing."""
    key = address_key(email)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SIGNUP_LEASE_WAIT
    pause = LEASE_POLL_FIRST
    while True:
        lease = await deps.signup_leases.reserve(key, deps.clock.now(), spaced=False)
        if lease.granted:
            break
        if loop.time() > deadline:
            raise ServiceBusy()
        # Backoff with full jitter: waiters of one address spread out and, waiting long,
        # ask the store a few times a second instead of 50 times.
        await asyncio.sleep(pause / 2 + secrets.randbelow(1000) * pause / 2000)
        pause = min(pause * 2, LEASE_POLL_MAX)
    try:
        yield
    finally:
        await deps.signup_leases.release(key, lease)


async def _keep_last_code(last_code: otp.StoredCode | None, user: User, *, deps: Deps) -> None:
    """No new code could be mailed (the hourly cap): the replaced account's live code, the
    last one mailed to this address, verifies the new account instead (as a resend past the
    cap keeps the last code). Without it, registrations up to the cap by anyone would leave
    the owner's own registration with no code at all, hour after hour. Safe: only the
    mailbox has the code, and a contested account activates no password."""
    if last_code is None:
        return
    await deps.codes.carry(
        last_code,
        key=otp.code_key(user.id, "verify_email"),
        user_id=user.id,
        expires_at=deps.clock.now() + timedelta(seconds=deps.otp_ttl),
    )


async def _resume(progress: Progress | None, email: str, *, deps: Deps) -> User | None:
    """The account an earlier attempt of this request created, with its code: issued now
    unless the earlier attempt got that far (a live code's email is on its way)."""
    user_id = (progress.effect or {}).get("user_id") if progress is not None else None
    if not isinstance(user_id, str):
        return None
    user = await deps.users.by_id(user_id)
    if user is None or user.email != email or user.status is not UserStatus.PENDING:
        return None
    live = await deps.codes.live(otp.code_key(user.id, "verify_email"), now=deps.clock.now())
    if live is None:
        await issue_code(user, "verify_email", deps=deps, cooldown=False)
    deps.notify_outbox()
    return user


async def _insert(
    email: str,
    password_hash: str,
    display_name: str,
    role: SignupRole,
    contested: bool,
    *,
    deps: Deps,
) -> User:
    now = deps.clock.now()
    user = User(
        id=new_user_id(),
        email=email,
        display_name=display_name,
        roles=(role,),
        status=UserStatus.PENDING,
        password_hash=password_hash,
        created_at=now,
        updated_at=now,
        signup_contested=contested,
    )
    registered = UserRegistered(
        user_id=user.id,
        email=email,
        display_name=display_name,
        roles=[role],
        registered_at=now,
    )
    return await deps.users.insert(user, [event(registered, user.id)])


async def _discard_pending(user: User, *, deps: Deps) -> bool:
    """Delete a pending account being registered again; False when it changed meanwhile."""
    now = deps.clock.now()
    gone = await deps.users.update(
        user.id,
        erasure(user.id, now),
        expect_status=UserStatus.PENDING,
        events=[event(UserDeleted(user_id=user.id, deleted_at=now), user.id)],
    )
    if gone is None:
        return False
    await deps.codes.discard_for_user(user.id)
    deps.notify_outbox()
    return True


async def verify_email(*, email: str, code: str, deps: Deps) -> TokenPair:
    """Prove the address with the emailed code; the account becomes active and signs in."""
    user = await deps.users.by_email(email)
    if user is not None and user.status is not UserStatus.PENDING:
        user = None
    proof = await prove_code(user, "verify_email", code, deps=deps, email=email)
    await spend_code(proof, deps=deps)
    user = proof.user
    now = deps.clock.now()
    change = UserChange(status=UserStatus.ACTIVE, verified_at=now, updated_at=now)
    if user.signup_contested:
        # A contested sign-up: the password may be anyone's, so it is not activated.
        change = replace(change, clear_password=True, signup_contested=False)
    active = await deps.users.update(
        user.id,
        change,
        expect_status=UserStatus.PENDING,
        events=[verified_event(user, now)],
    )
    if active is None:
        raise InvalidCode()
    deps.notify_outbox()
    await deps.codes.discard_for_user(user.id)  # every other code of the account dies
    return await open_session(active, deps=deps)


async def bootstrap_admin(
    *, email: str, password: str, display_name: str, deps: Deps
) -> User | None:
    """Create (or promote) the first admin when no admin exists yet; None when one does."""
    if await deps.users.any_admin():
        return None
    email = normalise_email(email)
    existing = await deps.users.by_email(email)
    if existing is not None and existing.email != email:
        # A look-alike of ADMIN_EMAIL (``ａdmin@…``, ``ADMİN@…``, ``straße``/``strasse``) is
        # another mailbox: only the configured address becomes the admin.
        if existing.status is not UserStatus.PENDING:
            log.error(
                "ADMIN_EMAIL has a verified look-alike account; no admin bootstrapped "
                "(delete or rename that account, or configure another ADMIN_EMAIL)",
                extra={"user_id": existing.id},
            )
            return None
        if not await _discard_pending(existing, deps=deps):
            return None  # changed under us: the next start decides again
        existing = None
    if existing is not None:
        return await _promote(existing, password, display_name, deps=deps)
    await checked_strength(password, (email, display_name), deps=deps)
    now = deps.clock.now()
    admin = User(
        id=new_user_id(),
        email=email,
        display_name=display_name,
        roles=("admin",),
        status=UserStatus.ACTIVE,
        password_hash=await deps.passwords.hash(password),
        created_at=now,
        updated_at=now,
        verified_at=now,
    )
    registered = UserRegistered(
        user_id=admin.id, email=email, display_name=display_name, roles=["admin"], registered_at=now
    )
    events = [event(registered, admin.id), verified_event(admin, now)]
    try:
        user = await deps.users.insert(admin, events)
    except EmailTaken:
        return None  # another replica bootstrapped the same admin at the same moment
    deps.notify_outbox()
    log.info("created the bootstrap admin", extra={"user_id": user.id})
    return user


async def _promote(existing: User, password: str, display_name: str, *, deps: Deps) -> User | None:
    now = deps.clock.now()
    if existing.status is UserStatus.PENDING:
        # Whoever registered this address never proved it (anyone may sign up with the
        # operator's email): neither the password they chose, nor their name and roles,
        # may come with an admin account.
        await checked_strength(password, (existing.email, display_name), deps=deps)
        change = UserChange(
            status=UserStatus.ACTIVE,
            verified_at=now,
            password_hash=await deps.passwords.hash(password),
            display_name=display_name,
            roles=("admin",),
            signup_contested=False,
            updated_at=now,
        )
        promoted = replace(existing, display_name=display_name, roles=("admin",))
        events = [updated_event(promoted, now), verified_event(promoted, now)]
    else:
        roles: tuple[Role, ...] = tuple(sorted({*existing.roles, "admin"}))
        change = UserChange(roles=roles, updated_at=now)
        promoted = replace(existing, roles=roles)
        events = [updated_event(promoted, now)]
    updated = await update_and_end_sessions(
        existing.id,
        change,
        reason="roles_changed",
        deps=deps,
        expect_status=existing.status,
        expect_version=existing.version,
        events=events,
    )
    if updated is None:
        return None  # changed under us (another replica bootstrapped it)
    await deps.codes.discard_for_user(existing.id)
    log.info("promoted the bootstrap admin", extra={"user_id": existing.id})
    return updated

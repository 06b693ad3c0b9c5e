"""The only wiring place: ``create_app(settings)`` builds the auth service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from auth_svc import handlers
from auth_svc.adapters import budgets, codes, sessions, users
from auth_svc.adapters.budgets import AttemptBudget
from auth_svc.adapters.codes import CodeRepository
from auth_svc.adapters.passwords import Passwords
from auth_svc.adapters.sessions import SessionRepository
from auth_svc.adapters.signing_keys import (
    KeyRing,
    KeyRingSource,
    Signer,
    key_reload_context,
)
from auth_svc.adapters.strength import StrengthChecker
from auth_svc.adapters.users import UserRepository, backfill_email_keys
from auth_svc.background import BackgroundWork
from auth_svc.domain.clock import Clock, SystemClock
from auth_svc.domain.passwords import PasswordPolicy, PasswordRejected
from auth_svc.entrypoints.http import PUBLIC_PATHS, add_routes, auth_errors_middleware
from auth_svc.keys import AUTH_METRICS, CLOCK, DEPS, KEY_RING
from auth_svc.metrics import AuthMetrics
from auth_svc.settings import AuthSettings
from switchyard import keys
from switchyard.authn import VERIFIER, authn_middleware
from switchyard.bus import bus_context
from switchyard.idempotency import idempotency_indexes
from switchyard.mongo import mongo_context
from switchyard.outbox import outbox_context, outbox_indexes
from switchyard.tokens import TokenVerifier
from switchyard.web import new_app

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

# Collections whose documents carry an outbox, and how their documents expire.
OUTBOX_COLLECTIONS = [users.USERS, codes.CODES, sessions.SESSIONS, budgets.BUDGETS]
OUTBOX_EXPIRY = [codes.EXPIRY, sessions.EXPIRY, sessions.ROTATED_EXPIRY, budgets.EXPIRY]


def create_app(settings: AuthSettings, *, clock: Clock | None = None) -> web.Application:
    clock = clock or SystemClock()
    app = new_app(settings)
    passphrase = settings.key_encryption_key
    ring = KeyRing(
        settings.keys_dir,
        passphrase=passphrase.get_secret_value() if passphrase else None,
        clock=clock,
    )
    verifier = TokenVerifier(
        keys=KeyRingSource(ring),
        issuer=settings.auth_issuer,
        audience=settings.jwt_audience,
        clock=lambda: clock.now().timestamp(),
    )
    app[CLOCK] = clock
    app[KEY_RING] = ring
    app[VERIFIER] = verifier
    metrics = app[AUTH_METRICS] = AuthMetrics(app[keys.METRICS])
    background = BackgroundWork(
        limit=settings.background_limit, on_dropped=metrics.background_work_dropped
    )
    app.middlewares.append(authn_middleware(verifier, public_paths=PUBLIC_PATHS))
    app.middlewares.append(auth_errors_middleware)

    indexes = [
        *users.INDEXES,
        *codes.INDEXES,
        *sessions.INDEXES,
        *budgets.INDEXES,
        *outbox_indexes(OUTBOX_COLLECTIONS, OUTBOX_EXPIRY),
        *idempotency_indexes(),
    ]
    app.cleanup_ctx.append(_signing_keys(settings, ring))
    app.cleanup_ctx.append(mongo_context(indexes))
    app.cleanup_ctx.append(bus_context)
    app.cleanup_ctx.append(outbox_context(OUTBOX_COLLECTIONS, expiry=OUTBOX_EXPIRY))
    app.cleanup_ctx.append(_commands(settings, ring, clock, metrics, background))
    app.cleanup_ctx.append(key_reload_context(ring, settings.key_reload_interval))
    # Last in, first out: pending code requests finish while the store and bus are still up.
    app.cleanup_ctx.append(_background(settings, background))
    add_routes(app)
    return app


def _signing_keys(settings: AuthSettings, ring: KeyRing) -> CleanupContext:
    """Load the key directory (creating a first key where allowed); no signing key → no start."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if settings.may_generate_key:
            ring.ensure_key()
        else:
            ring.reload()
        ring.active()  # raises KeyStoreError with instructions when there is none
        yield

    return context


def _commands(
    settings: AuthSettings,
    ring: KeyRing,
    clock: Clock,
    metrics: AuthMetrics,
    background: BackgroundWork,
) -> CleanupContext:
    """Build the commands' dependencies once the store and relay exist; bootstrap the admin."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        db = app[keys.MONGO_DB]
        # Accounts stored before addresses had a comparison key get one before we serve.
        await backfill_email_keys(db)
        passwords = Passwords(settings.argon2)
        strength = StrengthChecker(
            PasswordPolicy(min_score=settings.password_min_score),
            workers=settings.password_check_workers,
            max_waiting=settings.password_check_queue,
        )
        deps = handlers.Deps(
            clock=clock,
            users=UserRepository(db),
            codes=CodeRepository(db),
            sessions=SessionRepository(db),
            login_attempts=AttemptBudget(
                db,
                prefix="login",
                limit=settings.lockout_threshold,
                window=settings.lockout_window,
            ),
            code_guesses=AttemptBudget(
                db,
                prefix="code-guesses",
                limit=settings.otp_guess_budget,
                window=settings.otp_guess_window,
            ),
            code_issues=AttemptBudget(
                db,
                prefix="code-issues",
                limit=settings.otp_codes_per_hour,
                window=3600,
                min_interval=settings.otp_resend_cooldown,
            ),
            signup_leases=AttemptBudget(
                db, prefix="signup-lease", limit=1, window=handlers.SIGNUP_LEASE_SECONDS
            ),
            password_changes=AttemptBudget(
                db,
                prefix="password-changes",
                limit=settings.password_changes_per_hour,
                window=3600,
            ),
            passwords=passwords,
            strength=strength,
            tokens=Signer(
                ring,
                issuer=settings.auth_issuer,
                audience=settings.jwt_audience,
                lifetime=settings.access_token_ttl,
                clock=clock,
            ),
            metrics=metrics,
            background=background,
            notify_outbox=app[keys.OUTBOX_RELAY].notify,
            access_token_ttl=settings.access_token_ttl,
            refresh_token_ttl=settings.refresh_token_ttl,
            otp_ttl=settings.otp_ttl,
            otp_max_attempts=settings.otp_max_attempts,
            lockout_duration=settings.lockout_duration,
        )
        app[DEPS] = deps
        try:
            await strength.start()
            if settings.admin_email and settings.admin_password:
                try:
                    await handlers.bootstrap_admin(
                        email=str(settings.admin_email),
                        password=settings.admin_password.get_secret_value(),
                        display_name=settings.admin_display_name,
                        deps=deps,
                    )
                except PasswordRejected as error:
                    raise RuntimeError(
                        f"ADMIN_PASSWORD is not acceptable: {error.message}"
                    ) from None
            yield
        finally:
            await strength.close()
            passwords.close()

    return context


def _background(settings: AuthSettings, background: BackgroundWork) -> CleanupContext:
    """Let code requests already answered finish (bounded by the shutdown timeout)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await background.close(settings.shutdown_timeout)

    return context

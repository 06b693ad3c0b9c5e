"""The only wiring place: ``create_app(settings)`` builds the auth service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from auth_svc import handlers
from auth_svc.adapters import codes, sessions, throttle, users
from auth_svc.adapters.codes import CodeRepository
from auth_svc.adapters.passwords import Passwords
from auth_svc.adapters.sessions import SessionRepository
from auth_svc.adapters.signing_keys import (
    KeyRing,
    KeyRingSource,
    Signer,
    key_reload_context,
)
from auth_svc.adapters.throttle import LoginThrottle
from auth_svc.adapters.users import UserRepository
from auth_svc.domain.clock import Clock, SystemClock
from auth_svc.domain.passwords import PasswordPolicy, PasswordRejected
from auth_svc.entrypoints.http import PUBLIC_PATHS, add_routes, auth_errors_middleware
from auth_svc.keys import CLOCK, DEPS, KEY_RING
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
OUTBOX_COLLECTIONS = [users.USERS, codes.CODES, sessions.SESSIONS]
OUTBOX_EXPIRY = [codes.EXPIRY, sessions.EXPIRY]


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
    app.middlewares.append(authn_middleware(verifier, public_paths=PUBLIC_PATHS))
    app.middlewares.append(auth_errors_middleware)

    indexes = [
        *users.INDEXES,
        *codes.INDEXES,
        *sessions.INDEXES,
        *throttle.INDEXES,
        *outbox_indexes(OUTBOX_COLLECTIONS, OUTBOX_EXPIRY),
        *idempotency_indexes(),
    ]
    app.cleanup_ctx.append(_signing_keys(settings, ring))
    app.cleanup_ctx.append(mongo_context(indexes))
    app.cleanup_ctx.append(bus_context)
    app.cleanup_ctx.append(outbox_context(OUTBOX_COLLECTIONS, expiry=OUTBOX_EXPIRY))
    app.cleanup_ctx.append(_commands(settings, ring, clock))
    app.cleanup_ctx.append(key_reload_context(ring, settings.key_reload_interval))
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


def _commands(settings: AuthSettings, ring: KeyRing, clock: Clock) -> CleanupContext:
    """Build the commands' dependencies once the store and relay exist; bootstrap the admin."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        db = app[keys.MONGO_DB]
        passwords = Passwords(settings.argon2)
        deps = handlers.Deps(
            clock=clock,
            users=UserRepository(db),
            codes=CodeRepository(db),
            sessions=SessionRepository(db),
            throttle=LoginThrottle(
                db,
                threshold=settings.lockout_threshold,
                window=settings.lockout_window,
                duration=settings.lockout_duration,
            ),
            passwords=passwords,
            policy=PasswordPolicy(min_score=settings.password_min_score),
            signer=Signer(
                ring,
                issuer=settings.auth_issuer,
                audience=settings.jwt_audience,
                lifetime=settings.access_token_ttl,
                clock=clock,
            ),
            metrics=AuthMetrics.on(app[keys.METRICS]),
            notify_outbox=app[keys.OUTBOX_RELAY].notify,
            access_token_ttl=settings.access_token_ttl,
            refresh_token_ttl=settings.refresh_token_ttl,
            otp_ttl=settings.otp_ttl,
            otp_max_attempts=settings.otp_max_attempts,
            otp_resend_cooldown=settings.otp_resend_cooldown,
        )
        app[DEPS] = deps
        if settings.admin_email and settings.admin_password:
            try:
                await handlers.bootstrap_admin(
                    email=str(settings.admin_email),
                    password=settings.admin_password.get_secret_value(),
                    display_name=settings.admin_display_name,
                    deps=deps,
                )
            except PasswordRejected as error:
                passwords.close()
                raise RuntimeError(f"ADMIN_PASSWORD is not acceptable: {error.message}") from None
        try:
            yield
        finally:
            passwords.close()

    return context

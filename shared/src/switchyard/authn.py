"""Token authentication for aiohttp services and Socket.IO servers.

Every service verifies access tokens itself (never trusting identity headers):

    app.cleanup_ctx.append(verifier_context())   # token_verifier(settings): auth's JWKS
    app.middlewares.append(authn_middleware())

    @require_roles("admin")            # 401 without a valid token, 403 without the role
    async def list_users(request): identity = request[IDENTITY] ...

    @require_auth
    async def me(request): identity = current_identity(request) ...

A request with an ``Authorization: Bearer`` header that does not verify is
answered 401 (``WWW-Authenticate: Bearer error="invalid_token"``) whatever the
route; a request without one reaches the handler with no identity, and the
decorators decide.

Socket.IO: ``identity = await socketio_identity(verifier, environ, auth)`` in the
``connect`` handler refuses the connection (``ConnectionRefusedError``) when the
token (``auth: {token}`` or an ``Authorization`` header) does not verify.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from switchyard.problems import Problem
from switchyard.settings import ServiceSettings
from switchyard.tokens import Identity, InvalidToken, TokenVerifier

VERIFIER = web.AppKey("switchyard.token_verifier", TokenVerifier)
IDENTITY = web.RequestKey("switchyard.identity", Identity)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthorized(detail: str, *, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="switchyard"'
    if error:
        challenge += f', error="{error}"'
    return Problem(401, detail, slug="unauthorized", headers={"WWW-Authenticate": challenge})


def token_verifier(settings: ServiceSettings, **options: Any) -> TokenVerifier:
    """The verifier of every service but auth: auth's keys from ``JWKS_URL``, tokens for
    ``AUTH_ISSUER`` and ``JWT_AUDIENCE``. ``options`` go to :class:`TokenVerifier` (e.g.
    ``leeway``, ``refresh_interval``); not started yet."""
    return TokenVerifier(
        jwks_url=settings.jwks_url,
        issuer=settings.auth_issuer,
        audience=settings.jwt_audience,
        **options,
    )


def verifier_context(
    factory: Callable[[Any], TokenVerifier] = token_verifier,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that builds the verifier from the app's settings (by default with
    :func:`token_verifier`), starts it and closes it."""
    from switchyard import keys

    async def context(app: web.Application) -> AsyncIterator[None]:
        verifier = factory(app[keys.SETTINGS])
        await verifier.start()
        app[VERIFIER] = verifier
        try:
            yield
        finally:
            await verifier.close()

    return context


def authn_middleware(
    verifier: TokenVerifier | None = None, *, public_paths: Collection[str] = ()
) -> Any:
    """Verify a bearer token when one is sent; put the :class:`Identity` in ``request[IDENTITY]``.

    Without ``verifier`` the middleware uses ``app[VERIFIER]`` (see :func:`verifier_context`).
    On ``public_paths`` (endpoints that need no token, e.g. a token refresh) a token that
    does not verify is ignored and the request goes on anonymous, as the gateway does for
    its public routes: clients attach their expired token to every call.
    """
    public = frozenset(public_paths)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None and request.path not in _UNAUTHENTICATED_PATHS:
            active = verifier if verifier is not None else request.app[VERIFIER]
            try:
                request[IDENTITY] = await active.verify_async(token)
            except InvalidToken as error:
                if request.path not in public:
                    raise unauthorized(
                        "The access token is invalid or expired.", error="invalid_token"
                    ) from error
        return await handler(request)

    return middleware


def current_identity(request: web.Request) -> Identity:
    """The caller's identity; 401 when the request carried no valid token."""
    identity: Identity | None = request.get(IDENTITY)
    if identity is None:
        raise unauthorized("This endpoint needs an access token.")
    return identity


def require_roles(*roles: str) -> Callable[[Handler], Handler]:
    """Decorate a handler: a valid token is required, and (when given) one of ``roles``."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            identity = current_identity(request)
            if roles and not identity.has_role(*roles):
                raise Problem(
                    403, "Your account lacks the role this action needs.", slug="forbidden"
                )
            return await handler(request)

        return wrapper

    return decorate


require_auth = require_roles()


def check_roles(identity: Identity, *roles: str) -> None:
    """For non-HTTP handlers (Socket.IO events, commands): raise 403 unless a role matches."""
    if not identity.has_role(*roles):
        raise Problem(403, "Your account lacks the role this action needs.", slug="forbidden")


async def socketio_identity(
    verifier: TokenVerifier, environ: Mapping[str, Any], auth: Any
) -> Identity:
    """Authenticate a Socket.IO ``connect`` (token in ``auth["token"]`` or an Authorization header).

    Raises ``socketio.exceptions.ConnectionRefusedError("unauthorized", {"reason": ...})``;
    the client's ``connect_error`` gets ``{"message": "unauthorized", "data": {"reason": ...}}``.
    """
    token = auth.get("token") if isinstance(auth, Mapping) else None
    if not isinstance(token, str) or not token:
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
    try:
        if not token:
            raise InvalidToken("missing", "no access token was sent")
        return await verifier.verify_async(token)
    except InvalidToken as error:
        from socketio.exceptions import ConnectionRefusedError as Refused

        raise Refused("unauthorized", {"reason": error.reason}) from error


__all__ = [
    "IDENTITY",
    "VERIFIER",
    "authn_middleware",
    "bearer_token",
    "check_roles",
    "current_identity",
    "require_auth",
    "require_roles",
    "socketio_identity",
    "token_verifier",
    "verifier_context",
]

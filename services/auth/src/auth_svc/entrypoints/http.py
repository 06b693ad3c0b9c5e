"""The auth HTTP API (DESIGN §5 "auth") under /api/v1/auth, plus the /.well-known documents.

Every route is declared once, in :data:`ROUTES`, with whether it needs an access token: the
router, the authentication middleware's public paths (:data:`PUBLIC_PATHS`) and the test
that holds the gateway's route table to the same answers all read it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from auth_svc import handlers
from auth_svc.domain.errors import (
    AccountLocked,
    AuthError,
    EmailNotVerified,
    EmailTaken,
    InvalidCode,
    InvalidCredentials,
    InvalidRefreshToken,
    NotAllowed,
    NotAuthenticated,
    RoleChangeRefused,
    ServiceBusy,
    SignInInterrupted,
    TooManyPasswordChanges,
    UserNotFound,
    WrongPassword,
)
from auth_svc.domain.passwords import PasswordRejected
from auth_svc.domain.users import email_key, is_user_id
from auth_svc.entrypoints import oauth
from auth_svc.entrypoints.bodies import (
    ChangePasswordBody,
    DeleteAccountBody,
    ForgotBody,
    LoginBody,
    ProfilePatch,
    RefreshBody,
    RegisterBody,
    ResendBody,
    ResetBody,
    RevokedSessionsQuery,
    RolesBody,
    SignInCodeBody,
    SignInCodeVerifyBody,
    UserListQuery,
    VerifyEmailBody,
)
from auth_svc.keys import DEPS, KEY_RING
from auth_svc.settings import AuthSettings
from switchyard import keys
from switchyard.authn import (
    bearer_token,
    current_identity,
    require_auth,
    require_roles,
    unauthorized,
)
from switchyard.envelope import format_time
from switchyard.idempotency import idempotent, idempotent_request
from switchyard.pagination import invalid_cursor, page, read_cursor
from switchyard.problems import Problem, validation_problem
from switchyard.revocation import REVOKED_SESSIONS_PATH
from switchyard.tokens import jwks_document
from switchyard.web import json_response, read_json, read_query

PREFIX = "/api/v1/auth"
JWKS_MAX_AGE = 300
DISCOVERY_MAX_AGE = 3600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- error mapping -------------------------------------------------------------------------


def _problem(error: AuthError) -> Problem:
    if isinstance(error, AccountLocked):
        # The same words whether or not the address has an account.
        return Problem(
            429,
            "Too many failed sign-in attempts for this address. Try again later, or sign in "
            f"with a code sent by email: POST {PREFIX}/login/code.",
            slug="too-many-attempts",
            headers={"Retry-After": str(max(1, math.ceil(error.retry_after)))},
        )
    if isinstance(error, TooManyPasswordChanges):
        return Problem(
            429,
            "This account's password was changed too often in the last hour. Try again later.",
            slug="too-many-password-changes",
            headers={"Retry-After": str(max(1, math.ceil(error.retry_after)))},
        )
    if isinstance(error, InvalidCredentials):
        return Problem(401, "The email or password is wrong.", slug="invalid-credentials")
    if isinstance(error, EmailNotVerified):
        return Problem(
            403, "Verify your email address with the code we sent.", slug="email-not-verified"
        )
    if isinstance(error, EmailTaken):
        return Problem(409, "An account with this email already exists.", slug="email-taken")
    if isinstance(error, InvalidCode):
        return Problem(400, "The code is wrong, used or expired.", slug="invalid-code")
    if isinstance(error, InvalidRefreshToken):
        return Problem(
            401, "The refresh token is invalid, expired or revoked.", slug="invalid-refresh-token"
        )
    if isinstance(error, SignInInterrupted):
        return Problem(
            401,
            "The account changed while signing in (password, roles or sessions). Sign in again.",
            slug="sign-in-interrupted",
        )
    if isinstance(error, NotAuthenticated):
        return unauthorized("The session behind this token has ended.", error="invalid_token")
    if isinstance(error, WrongPassword):
        return Problem(403, "The current password is wrong.", slug="wrong-password")
    if isinstance(error, UserNotFound):
        return Problem(404, "No such user.", slug="not-found")
    if isinstance(error, RoleChangeRefused):
        return Problem(409, str(error), slug="role-change-refused")
    if isinstance(error, NotAllowed):
        return Problem(403, "Your account lacks the role this action needs.", slug="forbidden")
    if isinstance(error, ServiceBusy):
        return Problem(
            503, "Too busy to check passwords right now. Try again.", headers={"Retry-After": "1"}
        )
    return Problem(400, "The request cannot be completed.")


@web.middleware
async def auth_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except AuthError as error:
        raise _problem(error) from None


def _password_problem(error: PasswordRejected, field: str) -> Problem:
    return validation_problem(
        [{"location": f"/{field}", "message": error.message, "code": error.code}],
        detail="The password does not meet the password policy.",
    )


# -- sign-up, codes, sessions --------------------------------------------------------------


@idempotent("auth.register")
async def register(request: web.Request) -> web.Response:
    body = await read_json(request, RegisterBody)
    try:
        user = await handlers.register(
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            role=body.role,
            deps=request.app[DEPS],
            progress=idempotent_request(request),
        )
    except PasswordRejected as error:
        raise _password_problem(error, "password") from None
    return json_response(user.public(), status=201)


async def verify_email(request: web.Request) -> web.Response:
    body = await read_json(request, VerifyEmailBody)
    pair = await handlers.verify_email(
        email=_checking(request, body.email), code=body.code, deps=request.app[DEPS]
    )
    return json_response(pair.body())


def _accepted() -> web.Response:
    return json_response({"status": "accepted"}, status=202)


async def resend_code(request: web.Request) -> web.Response:
    body = await read_json(request, ResendBody)
    handlers.request_code(email=body.email, purpose=body.purpose, deps=request.app[DEPS])
    return _accepted()


async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginBody)
    pair = await handlers.login(
        email=_checking(request, body.email), password=body.password, deps=request.app[DEPS]
    )
    return json_response(pair.body())


async def refresh(request: web.Request) -> web.Response:
    body = await read_json(request, RefreshBody)
    pair = await handlers.refresh(refresh_token=body.refresh_token, deps=request.app[DEPS])
    return json_response(pair.body())


async def logout(request: web.Request) -> web.Response:
    body = await read_json(request, RefreshBody)
    await handlers.logout(refresh_token=body.refresh_token, deps=request.app[DEPS])
    return web.Response(status=204)


@require_auth
async def logout_all(request: web.Request) -> web.Response:
    await handlers.logout_all(identity=current_identity(request), deps=request.app[DEPS])
    return web.Response(status=204)


async def forgot_password(request: web.Request) -> web.Response:
    body = await read_json(request, ForgotBody)
    handlers.request_code(email=body.email, purpose="reset_password", deps=request.app[DEPS])
    return _accepted()


async def request_sign_in_code(request: web.Request) -> web.Response:
    body = await read_json(request, SignInCodeBody)
    handlers.request_code(email=body.email, purpose="sign_in", deps=request.app[DEPS])
    return _accepted()


async def sign_in_with_code(request: web.Request) -> web.Response:
    body = await read_json(request, SignInCodeVerifyBody)
    pair = await handlers.sign_in_with_code(
        email=_checking(request, body.email), code=body.code, deps=request.app[DEPS]
    )
    return json_response(pair.body())


async def reset_password(request: web.Request) -> web.Response:
    body = await read_json(request, ResetBody)
    try:
        await handlers.reset_password(
            email=_checking(request, body.email),
            code=body.code,
            new_password=body.new_password,
            deps=request.app[DEPS],
        )
    except PasswordRejected as error:
        raise _password_problem(error, "new_password") from None
    return web.Response(status=204)


@require_auth
async def change_password(request: web.Request) -> web.Response:
    body = await read_json(request, ChangePasswordBody)
    try:
        pair = await handlers.change_password(
            identity=current_identity(request),
            current_password=body.current_password,
            new_password=body.new_password,
            deps=request.app[DEPS],
        )
    except PasswordRejected as error:
        raise _password_problem(error, "new_password") from None
    return json_response(pair.body())


# -- the account ---------------------------------------------------------------------------


@require_auth
async def get_me(request: web.Request) -> web.Response:
    user = await handlers.current_user(current_identity(request), deps=request.app[DEPS])
    return json_response(user.public())


@require_auth
async def patch_me(request: web.Request) -> web.Response:
    body = await read_json(request, ProfilePatch)
    user = await handlers.update_profile(
        identity=current_identity(request), display_name=body.display_name, deps=request.app[DEPS]
    )
    return json_response(user.public())


@require_auth
async def delete_me(request: web.Request) -> web.Response:
    body = await read_json(request, DeleteAccountBody)
    await handlers.delete_account(
        identity=current_identity(request), password=body.password, deps=request.app[DEPS]
    )
    return web.Response(status=204)


# -- administration ------------------------------------------------------------------------


# The token's roles are a first filter; the handlers check the stored roles.
@require_roles("admin")
async def list_users(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    await handlers.current_admin(current_identity(request), deps=deps)  # 403 before 422
    query = read_query(request, UserListQuery)
    position = read_cursor(query.cursor, after=str)
    after: str | None = position["after"] if position else None
    if after is not None and not is_user_id(after):
        raise invalid_cursor()
    users, next_after = await handlers.list_users(
        identity=current_identity(request),
        limit=query.limit,
        after=after,
        status=query.status,
        role=query.role,
        deps=deps,
    )
    next_position = {"after": next_after} if next_after else None
    return json_response(page([user.public() for user in users], next_position))


@require_roles("admin")
async def put_roles(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    identity = current_identity(request)
    await handlers.current_admin(identity, deps=deps)
    body = await read_json(request, RolesBody)
    user = await handlers.set_roles(
        identity=identity, user_id=request.match_info["user_id"], roles=list(body.roles), deps=deps
    )
    return json_response(user.public())


@require_roles("admin")
async def end_user_sessions(request: web.Request) -> web.Response:
    await handlers.end_user_sessions(
        identity=current_identity(request),
        user_id=request.match_info["user_id"],
        deps=request.app[DEPS],
    )
    return web.Response(status=204)


# -- for other services --------------------------------------------------------------------


def _require_service(request: web.Request) -> None:
    """Only a service holding ``INTERNAL_API_TOKEN`` may read ``/internal/`` endpoints (the
    gateway does not route them; this is the second lock)."""
    configured = request.app[keys.SETTINGS].internal_api_token
    presented = bearer_token(request.headers.get("Authorization"))
    if (
        configured is None
        or presented is None
        or not hmac.compare_digest(presented.encode(), configured.get_secret_value().encode())
    ):
        raise Problem(
            401,
            "This endpoint is for the suite's services (INTERNAL_API_TOKEN).",
            slug="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="switchyard-internal"'},
        )


async def revoked_sessions(request: web.Request) -> web.Response:
    """The sessions revoked whose access tokens may still be alive (switchyard.revocation)."""
    _require_service(request)
    query = read_query(request, RevokedSessionsQuery)
    position = read_cursor(query.cursor, after=str)
    sessions, next_after = await handlers.revoked_sessions(
        after=position["after"] if position else None, limit=query.limit, deps=request.app[DEPS]
    )
    items = [
        {
            "user_id": session.user_id,
            "session_id": session.family_id,
            "expires_at": format_time(session.access_until),
        }
        for session in sessions
    ]
    return json_response(page(items, {"after": next_after} if next_after else None))


# -- discovery -----------------------------------------------------------------------------


def _cached(request: web.Request, payload: dict[str, Any], max_age: int) -> web.Response:
    body = json.dumps(payload, sort_keys=True).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def jwks(request: web.Request) -> web.Response:
    return _cached(request, jwks_document(request.app[KEY_RING].public_keys), JWKS_MAX_AGE)


async def authorization_server_metadata(request: web.Request) -> web.Response:
    """RFC 8414 metadata; the OpenID path serves the same document (see ``oauth``)."""
    settings = request.app[keys.SETTINGS]
    assert isinstance(settings, AuthSettings)
    document = oauth.metadata(settings.auth_issuer, settings.jwks_uri)
    return _cached(request, document, DISCOVERY_MAX_AGE)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    # No access token needed: a token sent along that does not verify (typically an expired
    # one, attached by the client to every call) is ignored here, not a 401.
    public: bool = False
    # For the suite's services only (INTERNAL_API_TOKEN); never routed by the gateway.
    internal: bool = False


ROUTES = (
    Route("POST", f"{PREFIX}/register", register, public=True),
    Route("POST", f"{PREFIX}/verify-email", verify_email, public=True),
    Route("POST", f"{PREFIX}/otp/resend", resend_code, public=True),
    Route("POST", f"{PREFIX}/login", login, public=True),
    Route("POST", f"{PREFIX}/login/code", request_sign_in_code, public=True),
    Route("POST", f"{PREFIX}/login/code/verify", sign_in_with_code, public=True),
    Route("POST", f"{PREFIX}/refresh", refresh, public=True),
    Route("POST", f"{PREFIX}/logout", logout, public=True),
    Route("POST", f"{PREFIX}/logout-all", logout_all),
    Route("POST", f"{PREFIX}/password/forgot", forgot_password, public=True),
    Route("POST", f"{PREFIX}/password/reset", reset_password, public=True),
    Route("POST", f"{PREFIX}/password/change", change_password),
    Route("GET", f"{PREFIX}/me", get_me),
    Route("PATCH", f"{PREFIX}/me", patch_me),
    Route("DELETE", f"{PREFIX}/me", delete_me),
    Route("GET", f"{PREFIX}/users", list_users),
    Route("PUT", f"{PREFIX}/users/{{user_id}}/roles", put_roles),
    Route("POST", f"{PREFIX}/users/{{user_id}}/logout-all", end_user_sessions),
    Route("GET", REVOKED_SESSIONS_PATH, revoked_sessions, public=True, internal=True),
    Route("GET", "/.well-known/jwks.json", jwks, public=True),
    Route("POST", oauth.TOKEN_PATH, oauth.token, public=True),
    Route("GET", oauth.METADATA_PATH, authorization_server_metadata, public=True),
    Route("GET", "/.well-known/openid-configuration", authorization_server_metadata, public=True),
)

PUBLIC_PATHS = frozenset(route.path for route in ROUTES if route.public)


# -- the outcome of a credential check, for the gateway's rate limits -----------------------

OUTCOME_HEADER = "X-Auth-Outcome"
# The account a credential check was about (set by the handler once the body is read).
CHECKED_ACCOUNT = web.RequestKey("auth.checked_account", str)
# Development and tests without IDEMPOTENCY_SECRET: one key per process.
_EPHEMERAL_SECRET = secrets.token_bytes(32)
# Endpoints whose answer says whether a secret (password, code, refresh token) was right.
CREDENTIAL_CHECKS = frozenset(
    {
        f"{PREFIX}/login",
        f"{PREFIX}/login/code/verify",
        f"{PREFIX}/verify-email",
        f"{PREFIX}/password/reset",
        f"{PREFIX}/refresh",
        oauth.TOKEN_PATH,
    }
)
_FAILED = frozenset({400, 401, 403, 429})


def _checking(request: web.Request, email: str) -> str:
    """Note whose secret this request checks (for :func:`tell_outcome`); returns ``email``."""
    request[CHECKED_ACCOUNT] = email
    return email


def account_key(secret: bytes, email: str) -> str:
    """What the gateway keys an account's limits by: an HMAC of the address's comparison
    form (look-alikes are one account), 128 bits in base64url. Never the address itself,
    and not guessable from a list of addresses without the secret."""
    mac = hmac.new(secret, b"gateway-account-limit\0" + email_key(email).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode()


def _outcome_secret(request: web.Request) -> bytes:
    """IDEMPOTENCY_SECRET (shared by every replica, so an account is one key at the gateway
    whichever replica answered; :func:`account_key` labels its use of it)."""
    value = request.app[keys.SETTINGS].idempotency_secret
    return _EPHEMERAL_SECRET if value is None else value.get_secret_value().encode()


async def tell_outcome(request: web.Request, response: web.StreamResponse) -> None:
    """``X-Auth-Outcome: success|failure[; account=<key>]`` on the answers of credential
    checks, so the gateway can weigh failed attempts more than successful ones and limit
    failures per account (it strips the header). A request refused before any check (413,
    415, 422) or failed by the server (5xx) gets none; a refresh token names no account."""
    if request.path not in CREDENTIAL_CHECKS or request.method != "POST":
        return
    if 200 <= response.status < 300:
        outcome = "success"
    elif response.status in _FAILED:
        outcome = "failure"
    else:
        return
    email = request.get(CHECKED_ACCOUNT)
    if email is not None:
        outcome += "; account=" + account_key(_outcome_secret(request), email)
    response.headers[OUTCOME_HEADER] = outcome


def add_routes(app: web.Application) -> None:
    app.on_response_prepare.append(tell_outcome)
    for route in ROUTES:
        # add_route adds no HEAD beside a GET: the API answers HEAD with 405.
        app.router.add_route(route.method, route.path, route.handler)


__all__ = [
    "CREDENTIAL_CHECKS",
    "OUTCOME_HEADER",
    "PUBLIC_PATHS",
    "ROUTES",
    "Route",
    "add_routes",
    "auth_errors_middleware",
]

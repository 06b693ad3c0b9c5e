"""The auth HTTP API (DESIGN §5 "auth") under /api/v1/auth, plus the /.well-known documents."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
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
    UserNotFound,
    WrongPassword,
)
from auth_svc.domain.passwords import PasswordRejected
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
    RolesBody,
    SignInCodeBody,
    SignInCodeVerifyBody,
    UserListQuery,
    VerifyEmailBody,
)
from auth_svc.keys import DEPS, KEY_RING
from auth_svc.settings import AuthSettings
from switchyard import keys
from switchyard.authn import current_identity, require_auth, require_roles, unauthorized
from switchyard.idempotency import idempotent, idempotent_request
from switchyard.problems import Problem, validation_problem
from switchyard.tokens import ALGORITHM, jwks_document
from switchyard.web import json_response, read_json, read_query

PREFIX = "/api/v1/auth"
JWKS_MAX_AGE = 300
DISCOVERY_MAX_AGE = 3600

Handler = Any


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
    pair = await handlers.verify_email(email=body.email, code=body.code, deps=request.app[DEPS])
    return json_response(pair.body())


def _accepted() -> web.Response:
    return json_response({"status": "accepted"}, status=202)


async def resend_code(request: web.Request) -> web.Response:
    body = await read_json(request, ResendBody)
    handlers.request_code(email=body.email, purpose=body.purpose, deps=request.app[DEPS])
    return _accepted()


async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginBody)
    pair = await handlers.login(email=body.email, password=body.password, deps=request.app[DEPS])
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
        email=body.email, code=body.code, deps=request.app[DEPS]
    )
    return json_response(pair.body())


async def reset_password(request: web.Request) -> web.Response:
    body = await read_json(request, ResetBody)
    try:
        await handlers.reset_password(
            email=body.email, code=body.code, new_password=body.new_password, deps=request.app[DEPS]
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


def _encode_cursor(user_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": user_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = data["after"]
        if not isinstance(after, str):
            raise TypeError
        return after
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise validation_problem(
            [{"location": "/cursor", "message": "not a cursor we issued", "code": "invalid_cursor"}]
        ) from None


# The token's roles are a first filter; the handlers check the stored roles.
@require_roles("admin")
async def list_users(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    await handlers.current_admin(current_identity(request), deps=deps)  # 403 before 422
    query = read_query(request, UserListQuery)
    after = _decode_cursor(query.cursor) if query.cursor else None
    users, next_after = await handlers.list_users(
        identity=current_identity(request),
        limit=query.limit,
        after=after,
        status=query.status,
        role=query.role,
        deps=deps,
    )
    return json_response(
        {
            "items": [user.public() for user in users],
            "next_cursor": _encode_cursor(next_after) if next_after else None,
        }
    )


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


async def openid_configuration(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    assert isinstance(settings, AuthSettings)
    base = settings.auth_issuer.rstrip("/") + PREFIX
    document = {
        "issuer": settings.auth_issuer,
        "jwks_uri": settings.jwks_uri,
        "token_endpoint": base + "/login",
        "revocation_endpoint": base + "/logout",
        "userinfo_endpoint": base + "/me",
        "registration_endpoint": base + "/register",
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "roles", "sid"],
    }
    return _cached(request, document, DISCOVERY_MAX_AGE)


# Endpoints that need no access token: a token sent along that does not verify (typically
# an expired one, attached by the client to every call) is ignored here, not a 401.
PUBLIC_PATHS = frozenset(
    {
        f"{PREFIX}/register",
        f"{PREFIX}/verify-email",
        f"{PREFIX}/otp/resend",
        f"{PREFIX}/login",
        f"{PREFIX}/login/code",
        f"{PREFIX}/login/code/verify",
        f"{PREFIX}/refresh",
        f"{PREFIX}/logout",
        f"{PREFIX}/password/forgot",
        f"{PREFIX}/password/reset",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    }
)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post(f"{PREFIX}/register", register)
    router.add_post(f"{PREFIX}/verify-email", verify_email)
    router.add_post(f"{PREFIX}/otp/resend", resend_code)
    router.add_post(f"{PREFIX}/login", login)
    router.add_post(f"{PREFIX}/login/code", request_sign_in_code)
    router.add_post(f"{PREFIX}/login/code/verify", sign_in_with_code)
    router.add_post(f"{PREFIX}/refresh", refresh)
    router.add_post(f"{PREFIX}/logout", logout)
    router.add_post(f"{PREFIX}/logout-all", logout_all)
    router.add_post(f"{PREFIX}/password/forgot", forgot_password)
    router.add_post(f"{PREFIX}/password/reset", reset_password)
    router.add_post(f"{PREFIX}/password/change", change_password)
    router.add_get(f"{PREFIX}/me", get_me, allow_head=False)
    router.add_patch(f"{PREFIX}/me", patch_me)
    router.add_delete(f"{PREFIX}/me", delete_me)
    router.add_get(f"{PREFIX}/users", list_users, allow_head=False)
    router.add_put(f"{PREFIX}/users/{{user_id}}/roles", put_roles)
    router.add_post(f"{PREFIX}/users/{{user_id}}/logout-all", end_user_sessions)
    router.add_get("/.well-known/jwks.json", jwks, allow_head=False)
    router.add_get("/.well-known/openid-configuration", openid_configuration, allow_head=False)


__all__ = ["PUBLIC_PATHS", "add_routes", "auth_errors_middleware"]

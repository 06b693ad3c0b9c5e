"""OAuth 2.0 for standard clients: the token endpoint (RFC 6749 §3.2, §6) and the
authorization-server metadata (RFC 8414).

- ``POST /api/v1/auth/token``, ``application/x-www-form-urlencoded``, ``grant_type=refresh_token``
  (the only grant: sign-in stays ``POST login`` with a JSON body), the same rotation and
  reuse detection as ``POST refresh``. Public clients (``token_endpoint_auth_methods_supported:
  [none]``): a ``client_id`` sent along is accepted and not checked; client credentials in an
  ``Authorization: Basic`` header are refused (``invalid_client``), since no client has any.
  Answers carry ``Cache-Control: no-store``; errors are RFC 6749 §5.2 JSON bodies
  (``{"error", "error_description"}``), not problem+json: that is what OAuth clients parse.
- ``/.well-known/oauth-authorization-server`` and ``/.well-known/openid-configuration`` serve
  one document, with only what is true (RFC 8414 §5 lets the OpenID path carry OAuth
  metadata). There is no authorization endpoint, so no ``response_types_supported`` (RFC 8414
  §2: claims with zero elements are omitted; the OAuth working group's reading for servers
  without an authorization endpoint); no ID tokens are issued, so no ``id_token_*``,
  ``subject_types_supported`` or ``userinfo_endpoint``; ``logout`` and ``register`` are not
  RFC 7009 revocation or RFC 7591 client registration, so neither is advertised.
"""

from __future__ import annotations

import binascii
from typing import Any

from aiohttp import web

from auth_svc import handlers
from auth_svc.domain.errors import InvalidRefreshToken
from auth_svc.keys import DEPS

TOKEN_PATH = "/api/v1/auth/token"
METADATA_PATH = "/.well-known/oauth-authorization-server"
FORM = "application/x-www-form-urlencoded"
MAX_REFRESH_TOKEN_CHARS = 512
GRANT_TYPES = ("refresh_token",)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §3.2: a parameter sent twice is an invalid request.
_SINGLE = ("grant_type", "refresh_token", "scope", "client_id")


def oauth_error(status: int, error: str, description: str, **headers: str) -> web.Response:
    """An RFC 6749 §5.2 error response."""
    return web.json_response(
        {"error": error, "error_description": description},
        status=status,
        headers={**_NO_STORE, **headers},
    )


async def _form(request: web.Request) -> Any:
    if request.content_type != FORM:
        raise _Refused(400, "invalid_request", f"The request body must be {FORM}.")
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError, binascii.Error):
        raise _Refused(400, "invalid_request", "The form body cannot be read.") from None
    for name in _SINGLE:
        if len(form.getall(name, [])) > 1:
            raise _Refused(400, "invalid_request", f"The parameter {name} was sent twice.")
    return form


class _Refused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.response = oauth_error(status, error, description)


async def token(request: web.Request) -> web.StreamResponse:
    try:
        return await _token(request)
    except _Refused as refused:
        return refused.response


async def _token(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization", "").lower().startswith("basic "):
        return oauth_error(
            401,
            "invalid_client",
            "No client has credentials: send client_id in the body, without authentication.",
            **{"WWW-Authenticate": 'Basic realm="switchyard"'},
        )
    form = await _form(request)
    grant_type = form.get("grant_type")
    if not isinstance(grant_type, str) or not grant_type:
        return oauth_error(400, "invalid_request", "grant_type is required.")
    if grant_type not in GRANT_TYPES:
        return oauth_error(
            400, "unsupported_grant_type", "Only grant_type=refresh_token is supported here."
        )
    refresh_token = form.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        return oauth_error(400, "invalid_request", "refresh_token is required.")
    if len(refresh_token) > MAX_REFRESH_TOKEN_CHARS:
        return oauth_error(400, "invalid_grant", "The refresh token is invalid.")
    scope = form.get("scope")
    if isinstance(scope, str) and scope.strip():
        # RFC 6749 §6: no scope beyond the one granted, and tokens are granted none.
        return oauth_error(400, "invalid_scope", "Tokens carry no scope; omit the parameter.")
    try:
        pair = await handlers.refresh(refresh_token=refresh_token, deps=request.app[DEPS])
    except InvalidRefreshToken:  # anything else (busy, …) is the service's problem, not the token's
        return oauth_error(
            400, "invalid_grant", "The refresh token is invalid, expired or revoked."
        )
    return web.json_response(pair.body(), headers=_NO_STORE)


def metadata(issuer: str, jwks_uri: str) -> dict[str, Any]:
    """The authorization-server metadata (RFC 8414 §2): only what is true."""
    return {
        "issuer": issuer,
        "token_endpoint": issuer.rstrip("/") + TOKEN_PATH,
        "jwks_uri": jwks_uri,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": ["none"],
    }


__all__ = ["METADATA_PATH", "TOKEN_PATH", "metadata", "oauth_error", "token"]

"""A local Firebase Cloud Messaging server speaking the real HTTP v1 API, for tests and benchmarks.

It serves what ``firebase-admin`` calls, so the real library is driven end to end:

- ``POST /token`` — Google's OAuth 2.0 token endpoint (the service-account file's
  ``token_uri``): a ``jwt-bearer`` grant whose assertion must be signed by the
  service account's key (RS256, ``aud`` Google's token endpoint); answers an access token;
- ``POST /v1/projects/{project}/messages:send`` — FCM v1 send: ``Authorization: Bearer``
  with an issued token; a registered token gets ``{"name": ...}``, an unknown one
  ``404 UNREGISTERED``, a malformed one ``400 INVALID_ARGUMENT``, both in FCM's error
  shape (``google.firebase.fcm.v1.FcmError`` details).

Scripted trouble: :meth:`FakeFcm.fail_next` answers the next sends with a status (e.g. 429
with ``Retry-After``); ``refuse_tokens`` makes the token endpoint answer ``invalid_grant``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from switchyard.testing.servers import AppServer

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs its grant for Google's token endpoint whatever ``token_uri`` says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
MESSAGING_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_ERROR_CODES = {429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass(frozen=True)
class ReceivedPush:
    """One message FCM accepted: the ``message`` object of the send request, as sent."""

    token: str
    message: dict[str, Any]
    received_at: float

    @property
    def notification(self) -> dict[str, Any]:
        return dict(self.message.get("notification") or {})

    @property
    def data(self) -> dict[str, str]:
        return dict(self.message.get("data") or {})

    @property
    def android(self) -> dict[str, Any]:
        return dict(self.message.get("android") or {})

    @property
    def apns(self) -> dict[str, Any]:
        return dict(self.message.get("apns") or {})


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class FakeFcm:
    project_id: str = "switchyard-test"
    server: AppServer | None = None
    received: list[ReceivedPush] = field(default_factory=list)
    # Tokens FCM knows; any other well-formed token is UNREGISTERED.
    registered: set[str] = field(default_factory=set)
    token_requests: int = 0
    send_requests: int = 0
    refuse_tokens: bool = False
    # Seconds each send takes (a slow FCM).
    latency: float = 0.0
    _failures: list[_Failure] = field(default_factory=list)
    _access_tokens: set[str] = field(default_factory=set)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self.server = await AppServer(app).start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account(self) -> dict[str, Any]:
        """A service-account key as the Firebase console issues it (generated, test-only)."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": f"firebase-adminsdk@{self.project_id}.iam.gserviceaccount.com",
            "client_id": "1" * 21,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }

    def write_credentials(self, path: Path) -> Path:
        path.write_text(json.dumps(self.service_account()))
        path.chmod(0o600)
        return path

    def register(self, *tokens: str) -> None:
        self.registered.update(tokens)

    def fail_next(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` sends with ``status`` (and ``Retry-After`` if given)."""
        self._failures.append(_Failure(status, retry_after, times))

    def to(self, token: str) -> list[ReceivedPush]:
        return [push for push in self.received if push.token == token]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedPush]:
        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.received) >= count)

        await asyncio.wait_for(enough(), timeout)
        return list(self.received)

    # -- endpoints -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type")
        try:
            claims = jwt.decode(
                str(form.get("assertion", "")),
                self._key.public_key(),
                algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri],
            )
        except jwt.PyJWTError as error:
            return _oauth_error("invalid_grant", str(error))
        scopes = str(claims.get("scope", "")).split()
        if self.refuse_tokens or not {CLOUD_PLATFORM, MESSAGING_SCOPE} & set(scopes):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        access_token = "ya29." + secrets.token_urlsafe(24)
        self._access_tokens.add(access_token)
        return web.json_response(
            {"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        self.send_requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        authorization = request.headers.get("Authorization", "")
        if authorization.removeprefix("Bearer ") not in self._access_tokens:
            return _fcm_error(401, "Request had invalid authentication credentials.")
        if request.match_info["project"] != self.project_id:
            return _fcm_error(403, "The caller does not have permission", code="SENDER_ID_MISMATCH")
        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.pop(0)
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            return _fcm_error(failure.status, "scripted failure", headers=headers)
        body = await request.json()
        message = body.get("message") or {}
        token = message.get("token")
        if not isinstance(token, str) or not token or len(token) > 4096 or " " in token:
            return _fcm_error(
                400,
                "The registration token is not a valid FCM registration token",
                code="INVALID_ARGUMENT",
            )
        if token not in self.registered:
            return _fcm_error(404, "Requested entity was not found.", code="UNREGISTERED")
        message_id = f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"
        async with self._arrived:
            self.received.append(ReceivedPush(token, message, time.monotonic()))
            self._arrived.notify_all()
        return web.json_response({"name": message_id})


def _oauth_error(error: str, description: str = "") -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _fcm_error(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    error_code = code or _ERROR_CODES.get(status)
    details = [{"@type": FCM_ERROR, "errorCode": error_code}] if error_code else []
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            "details": details,
        }
    }
    return web.json_response(body, status=status, headers=headers)

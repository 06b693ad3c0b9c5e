"""Auth's key endpoint as every other service sees it, for tests and benchmarks: a real aiohttp
server on 127.0.0.1 publishing a JWKS of generated Ed25519 keys, and issuing access tokens
signed by them, with the claims a test chooses.

    async with JwksServer(issuer="https://auth.test") as keys:
        settings = MySettings(jwks_url=keys.jwks_url, auth_issuer=keys.issuer, ...)
        token = keys.token("user-1", ["admin"])
        expired = keys.signer_with(clock=lambda: time.time() - 3600).issue("u", []).token
        new_kid = keys.rotate()           # sign with a new key; the old one stays published
        keys.retire(old_kid)              # ...until retired
        keys.revoke(sid, expires_at)      # listed as auth lists revoked sessions

It also serves auth's list of revoked sessions (``switchyard.revocation``) beside the JWKS,
for ``INTERNAL_API_TOKEN`` = :data:`TEST_INTERNAL_TOKEN` (what ``settings_overrides`` sets).

The fixture ``jwks_server`` (``switchyard.testing.plugin``) starts one per test.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from switchyard.revocation import REVOKED_SESSIONS_PATH
from switchyard.testing.servers import AppServer
from switchyard.tokens import TokenSigner, generate_signing_key, jwks_document

JWKS_PATH = "/.well-known/jwks.json"
TEST_ISSUER = "https://auth.test"
TEST_AUDIENCE = "switchyard"
TEST_INTERNAL_TOKEN = "test-internal-token-0123456789abcdef"


class JwksServer(AppServer):
    """A JWKS endpoint with generated Ed25519 keys, and the signer of its current key
    (an :class:`AppServer`: ``start``/``stop`` or ``async with``)."""

    def __init__(
        self,
        *,
        issuer: str = TEST_ISSUER,
        audience: str = TEST_AUDIENCE,
        lifetime: float = 900,
        internal_token: str = TEST_INTERNAL_TOKEN,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.kid, key = generate_signing_key()
        self._published: dict[str, Ed25519PrivateKey] = {self.kid: key}
        self.fetches = 0  # how often the JWKS was served (a verifier's refetches show here)
        self.internal_token = internal_token
        self.revoked: dict[str, tuple[str, float]] = {}  # session id -> (user id, expires at)
        self.revoked_reads = 0
        self.malformed_revoked: list[Any] = []  # listed too, before the well-formed items
        app = web.Application()
        app.router.add_get(JWKS_PATH, self._serve)
        app.router.add_get(REVOKED_SESSIONS_PATH, self._serve_revoked)
        super().__init__(app)

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    @property
    def auth_settings(self) -> dict[str, str]:
        """The settings a service checks its callers' tokens with, pointed at this server."""
        return {
            "jwks_url": self.jwks_url,
            "auth_issuer": self.issuer,
            "jwt_audience": self.audience,
        }

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The key new tokens are signed with."""
        return self._published[self.kid]

    @property
    def kids(self) -> list[str]:
        """The published key ids, oldest first."""
        return list(self._published)

    async def _serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        public = {kid: key.public_key() for kid, key in self._published.items()}
        return web.json_response(jwks_document(public))

    async def _serve_revoked(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.internal_token}":
            return web.json_response({"title": "Unauthorized"}, status=401)
        self.revoked_reads += 1
        items = self.malformed_revoked + [
            {
                "user_id": user_id,
                "session_id": session_id,
                "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(),
            }
            for session_id, (user_id, expires_at) in self.revoked.items()
        ]
        return web.json_response({"items": items, "next_cursor": None})

    def revoke(self, session_id: str, expires_at: float, user_id: str = "user-1") -> None:
        """List ``session_id`` as revoked (until ``expires_at``, epoch seconds)."""
        self.revoked[session_id] = (user_id, expires_at)

    def signer_with(self, **changes: Any) -> TokenSigner:
        """A signer like the server's own, with ``changes`` (``issuer``, ``audience``,
        ``lifetime``, ``clock``, ``private_key``, ``kid``): for expired, forged or foreign
        tokens. A ``private_key`` given without a ``kid`` keeps the current kid (a forgery)."""
        options: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "lifetime": self.lifetime,
            "clock": time.time,
            **changes,
        }
        private_key = options.pop("private_key", self.private_key)
        kid = options.pop("kid", self.kid)
        return TokenSigner(private_key, kid, **options)

    def token(
        self,
        subject: str = "user-1",
        roles: Iterable[str] = ("customer",),
        *,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A valid access token for ``subject`` with ``roles`` (plus any extra ``claims``)."""
        return self.signer_with().issue(subject, roles, extra=claims).token

    def rotate(self) -> str:
        """Sign with a new key from now on; the old keys stay published. Returns the new kid."""
        self.kid, key = generate_signing_key()
        self._published[self.kid] = key
        return self.kid

    def retire(self, kid: str) -> None:
        """Stop publishing ``kid`` (tokens it signed stop verifying once verifiers refetch)."""
        if kid == self.kid:
            raise ValueError("the signing key cannot be retired; rotate first")
        del self._published[kid]

"""Verifying access tokens: the gateway's hot path, written for speed.

- the key objects are built once per ``kid`` (by the key source);
- the token's shape and signature length are checked with one regex, the header is
  parsed once per distinct header segment (a bounded cache), and the signature is
  checked with ``cryptography``'s Ed25519 directly;
- only ``alg: EdDSA`` and ``typ: at+jwt`` (RFC 9068) are accepted, so ``none`` and HS*
  (including HS256 "signed" with the public key) never reach a key;
- a token whose session (``sid``) is in ``denied`` is refused (``InvalidToken("revoked")``):
  one lookup, fed by ``switchyard.revocation``. A cache of verified tokens in front of the
  verifier must check ``identity.claims.get("sid") in verifier.denied`` on every hit.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Container
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature

from switchyard.tokens.codec import (
    ALGORITHM,
    Clock,
    Identity,
    InvalidToken,
    b64url_decode,
    b64url_encode,
)
from switchyard.tokens.keys import JwksKeys, KeySource

_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
DEFAULT_LEEWAY = 30.0
MAX_TOKEN_CHARS = 8192
# header.payload.signature — an Ed25519 signature is 64 bytes = 86 base64url characters.
_TOKEN_SHAPE = re.compile(r"([A-Za-z0-9_-]{2,1024})\.([A-Za-z0-9_-]{2,6000})\.([A-Za-z0-9_-]{86})")
_HEADER_CACHE_SIZE = 256


class TokenVerifier:
    """Verifies access tokens: EdDSA only, ``typ: at+jwt``, ``iss``/``aud``/``exp``/``nbf``/``iat``
    with a leeway. Give either ``jwks_url`` or an in-process ``keys`` source."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        keys: KeySource | None = None,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock = time.time,
        refresh_interval: float = 300.0,
        unknown_kid_cooldown: float = 10.0,
        denied: Container[str] = frozenset(),
    ) -> None:
        if keys is None and jwks_url is not None:
            keys = JwksKeys(
                jwks_url,
                refresh_interval=refresh_interval,
                unknown_kid_cooldown=unknown_kid_cooldown,
            )
        elif (keys is None) == (jwks_url is None):
            raise ValueError("give exactly one of jwks_url or keys")
        assert keys is not None
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.clock = clock
        self.keys: KeySource = keys
        # Session ids (the ``sid`` claim) whose tokens are refused: a deny-list's plain dict
        # (switchyard.revocation), so the check is one lookup.
        self.denied: Container[str] = denied
        self._headers: dict[str, str] = {}

    async def start(self) -> None:
        await self.keys.start()

    async def close(self) -> None:
        await self.keys.close()

    async def __aenter__(self) -> TokenVerifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _kid(self, header_segment: str) -> str:
        kid = self._headers.get(header_segment)
        if kid is not None:
            return kid
        try:
            header = json.loads(b64url_decode(header_segment))
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed", "the token header is not base64url JSON") from None
        if not isinstance(header, dict):
            raise InvalidToken("malformed", "the token header is not a JSON object")
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm-not-allowed", "only EdDSA-signed tokens are accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
            raise InvalidToken("wrong-type", "the token is not an access token (typ at+jwt)")
        if "crit" in header:
            raise InvalidToken("unsupported-header", "critical header extensions are not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("malformed", "the token header has no kid")
        if len(self._headers) >= _HEADER_CACHE_SIZE:
            self._headers.clear()
        self._headers[header_segment] = kid
        return kid

    def key_id(self, token: str) -> str:
        """The ``kid`` of a token's header (cached per header; raises :class:`InvalidToken`),
        so a cache of verified tokens can tell which key each one depends on."""
        return self._kid(token.split(".", 1)[0])

    def verify(self, token: str) -> Identity:
        """Verify a token with the keys known now; raises :class:`InvalidToken`.

        An unknown ``kid`` asks the key source to refresh in the background; use
        :meth:`verify_async` to wait for that refresh instead.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("malformed", "the token is not a compact JWS")
        shape = _TOKEN_SHAPE.fullmatch(token)
        if shape is None:
            raise InvalidToken("malformed", "the token is not an EdDSA compact JWS")
        header_segment, payload_segment, signature_segment = shape.groups()
        kid = self._kid(header_segment)
        key = self.keys.get(kid)
        if key is None:
            self.keys.on_unknown_kid(kid)
            raise InvalidToken("unknown-kid", "the token was signed by a key we do not know")
        signature = b64url_decode(signature_segment)
        if b64url_encode(signature) != signature_segment:
            raise InvalidToken("malformed", "the signature is not canonical base64url")
        try:
            key.verify(
                signature, token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
            )
        except InvalidSignature:
            raise InvalidToken("bad-signature", "the token signature does not verify") from None
        try:
            claims = json.loads(b64url_decode(payload_segment))
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed", "the token payload is not base64url JSON") from None
        if not isinstance(claims, dict):
            raise InvalidToken("malformed", "the token payload is not a JSON object")
        return self._identity(claims)

    async def verify_async(self, token: str) -> Identity:
        """As :meth:`verify`; an unknown ``kid`` waits for one JWKS refetch (with cooldown)."""
        try:
            return self.verify(token)
        except InvalidToken as error:
            if error.reason != "unknown-kid":
                raise
            kid = self._kid(token.split(".", 1)[0])
            if not await self.keys.refresh_unknown(kid):
                raise
        return self.verify(token)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        now = self.clock()
        leeway = self.leeway
        exp = claims.get("exp")
        if not _is_number(exp):
            raise InvalidToken("missing-claim", "the token has no numeric exp")
        if now > exp + leeway:
            raise InvalidToken("expired", "the token has expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_number(nbf):
                raise InvalidToken("malformed", "nbf is not numeric")
            if now + leeway < nbf:
                raise InvalidToken("not-yet-valid", "the token is not valid yet")
        iat = claims.get("iat")
        if not _is_number(iat):
            raise InvalidToken("missing-claim", "the token has no numeric iat")
        if now + leeway < iat:
            raise InvalidToken("not-yet-valid", "the token was issued in the future")
        if claims.get("iss") != self.issuer:
            raise InvalidToken("wrong-issuer", "the token was issued by someone else")
        aud = claims.get("aud")
        if aud != self.audience and not (isinstance(aud, list) and self.audience in aud):
            raise InvalidToken("wrong-audience", "the token is meant for another audience")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("missing-claim", "the token has no subject")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("missing-claim", "the token has no jti")
        try:
            revoked = claims.get("sid") in self.denied
        except TypeError:  # an unhashable sid (a list): not one of auth's
            raise InvalidToken("malformed", "sid is not a string") from None
        if revoked:
            raise InvalidToken("revoked", "the session behind this token has ended")
        roles = claims.get("roles", ())
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise InvalidToken("malformed", "roles is not a list of strings")
        return Identity(
            user_id=sub,
            roles=frozenset(roles),
            token_id=jti,
            expires_at=exp,
            issued_at=iat,
            claims=claims,
        )


def _is_number(value: Any) -> TypeGuard[float]:
    return type(value) is int or type(value) is float  # bool is not a timestamp

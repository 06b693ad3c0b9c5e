"""Access tokens: EdDSA (Ed25519) JWTs, signed by auth and verified by every service.

Verification is the hot path of the gateway, so it is written for speed:

- the key objects are built once per ``kid`` (from a JWKS document or in-process);
- the token's shape and signature length are checked with one regex, the header
  is parsed once per distinct header segment (a bounded cache), and the signature
  is checked with ``cryptography``'s Ed25519 directly;
- only ``alg: EdDSA`` and ``typ: at+jwt`` (RFC 9068) are accepted, so ``none``
  and HS* (including HS256 "signed" with the public key) never reach a key.

Usage::

    verifier = TokenVerifier(jwks_url=".../.well-known/jwks.json", issuer=..., audience=...)
    await verifier.start()           # first JWKS fetch + background refresh
    identity = verifier.verify(token)               # sync, raises InvalidToken(reason)
    identity = await verifier.verify_async(token)   # also refetches on an unknown kid
    await verifier.close()

Tests (and the auth service itself) use an in-process key source instead of a
URL: ``TokenVerifier(keys=StaticKeys({kid: public_key}), issuer=..., audience=...)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

log = logging.getLogger("switchyard.tokens")

ALGORITHM = "EdDSA"
ACCESS_TOKEN_TYPE = "at+jwt"
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
DEFAULT_LEEWAY = 30.0
MAX_TOKEN_CHARS = 8192
# header.payload.signature — an Ed25519 signature is 64 bytes = 86 base64url characters.
_TOKEN_SHAPE = re.compile(r"([A-Za-z0-9_-]{2,1024})\.([A-Za-z0-9_-]{2,6000})\.([A-Za-z0-9_-]{86})")
_HEADER_CACHE_SIZE = 256

Clock = Callable[[], float]


# -- errors and identity --------------------------------------------------------------


class InvalidToken(Exception):
    """The token must not be trusted. ``reason`` is a short machine-readable slug:

    ``malformed``, ``algorithm-not-allowed``, ``wrong-type``, ``unknown-kid``,
    ``bad-signature``, ``expired``, ``not-yet-valid``, ``wrong-issuer``,
    ``wrong-audience``, ``missing-claim``, ``unsupported-header``.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as proven by a verified access token."""

    user_id: str
    roles: frozenset[str]
    token_id: str
    expires_at: float
    issued_at: float
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_role(self, *roles: str) -> bool:
        """True when the identity holds at least one of ``roles``."""
        return not self.roles.isdisjoint(roles)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


# -- encoding helpers -------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def encode_jwt(
    header: Mapping[str, Any], claims: Mapping[str, Any], private_key: Ed25519PrivateKey
) -> str:
    """Sign ``claims`` under ``header`` with Ed25519 (``header`` should say ``alg: EdDSA``)."""
    signing_input = (
        b64url_encode(_compact_json(header)) + "." + b64url_encode(_compact_json(claims))
    )
    signature = private_key.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_thumbprint(key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url): a stable ``kid`` for a key."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(public_key_bytes(key))},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return b64url_encode(hashlib.sha256(canonical).digest())


def public_jwk(kid: str, key: Ed25519PublicKey) -> dict[str, str]:
    """One public key as a JWK (RFC 8037)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(public_key_bytes(key)),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def jwks_document(keys: Mapping[str, Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [public_jwk(kid, key) for kid, key in keys.items()]}


def keys_from_jwks(
    document: Any, *, previous: Mapping[str, Ed25519PublicKey] | None = None
) -> dict[str, Ed25519PublicKey]:
    """The usable Ed25519 signing keys of a JWKS document, by ``kid``.

    Keys of other types, curves, algorithms or uses are skipped. A key whose
    ``x`` did not change keeps its existing object (no re-parsing per fetch).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS document is an object with a 'keys' list")
    previous = previous or {}
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", ALGORITHM) != ALGORITHM:
            continue
        if not isinstance(kid, str) or not kid or not isinstance(x, str):
            continue
        try:
            raw = b64url_decode(x)
        except (binascii.Error, ValueError):
            log.warning("skipping a JWK with an undecodable key", extra={"kid": kid})
            continue
        if len(raw) != 32:
            log.warning("skipping a JWK with a key of the wrong length", extra={"kid": kid})
            continue
        old = previous.get(kid)
        out[kid] = (
            old
            if old is not None and public_key_bytes(old) == raw
            else Ed25519PublicKey.from_public_bytes(raw)
        )
    return out


# -- signing (the auth service, and tests that need tokens) ---------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    issued_at: int
    expires_at: int


class TokenSigner:
    """Issues access tokens: header ``{alg: EdDSA, typ: at+jwt, kid}``, claims
    ``iss aud sub exp iat nbf jti roles``."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        kid: str,
        *,
        issuer: str,
        audience: str,
        lifetime: float = 900,
        clock: Clock = time.time,
    ) -> None:
        self.private_key = private_key
        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.clock = clock

    def issue(
        self, subject: str, roles: Iterable[str], *, extra: Mapping[str, Any] | None = None
    ) -> IssuedToken:
        now = int(self.clock())
        expires = now + int(self.lifetime)
        jti = secrets.token_urlsafe(16)
        claims = {
            **(extra or {}),
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": jti,
            "roles": sorted(set(roles)),
        }
        header = {"alg": ALGORITHM, "typ": ACCESS_TOKEN_TYPE, "kid": self.kid}
        return IssuedToken(encode_jwt(header, claims, self.private_key), jti, now, expires)


# -- key sources ------------------------------------------------------------------------


class KeySource(Protocol):
    """Where a verifier finds public keys by ``kid``."""

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key for ``kid`` if it is known now (fast, no I/O)."""

    def on_unknown_kid(self, kid: str) -> None:
        """A token named a kid we don't know: refresh soon if allowed (no waiting)."""

    async def refresh_unknown(self, kid: str) -> bool:
        """Try to learn ``kid`` now (subject to a cooldown); True when it is known afterwards."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class StaticKeys:
    """An in-process key source: keys given directly (tests, or a service that holds the keys)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self._keys: dict[str, Ed25519PublicKey] = dict(keys or {})

    @classmethod
    def from_jwks(cls, document: Any) -> StaticKeys:
        return cls(keys_from_jwks(document))

    def add(self, kid: str, key: Ed25519PublicKey) -> None:
        self._keys[kid] = key

    def remove(self, kid: str) -> None:
        self._keys.pop(kid, None)

    def replace(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def on_unknown_kid(self, kid: str) -> None:
        return None

    async def refresh_unknown(self, kid: str) -> bool:
        return kid in self._keys

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class JwksKeys:
    """Public keys fetched from a JWKS URL.

    - ``start()`` fetches once (a failure is logged, not fatal: the auth service may
      start after us) and starts a background refresh every ``refresh_interval``
      seconds (failures back off from 1 s up to the interval, old keys stay in use);
    - an unknown ``kid`` triggers a refetch, at most once per ``unknown_kid_cooldown``
      seconds, so junk kids cannot turn us into a JWKS-fetching amplifier;
    - concurrent refetches are coalesced into one request.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_interval: float = 300.0,
        unknown_kid_cooldown: float = 10.0,
        timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self.unknown_kid_cooldown = unknown_kid_cooldown
        self.timeout = timeout
        self.clock = clock
        self._session = session
        self._own_session = session is None
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.fetches = 0

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            await self.refresh()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning(
                "JWKS not available yet; will retry", extra={"url": self.url, "error": repr(error)}
            )
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def close(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._inflight = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def refresh(self) -> None:
        """Fetch the JWKS now (joining a fetch already in flight)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        if self._session is None:
            raise RuntimeError("JwksKeys.start() was not called")
        self._last_attempt = self.clock()
        self.fetches += 1
        async with self._session.get(
            self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
        ) as response:
            response.raise_for_status()
            document = await response.json(content_type=None)
        keys = keys_from_jwks(document, previous=self._keys)
        if not keys:
            raise ValueError("the JWKS holds no Ed25519 signing key")
        added, removed = set(keys) - set(self._keys), set(self._keys) - set(keys)
        self._keys = keys
        if added or removed:
            log.info(
                "signing keys updated", extra={"added": sorted(added), "removed": sorted(removed)}
            )

    async def _refresh_loop(self) -> None:
        backoff = 1.0
        delay = self.refresh_interval if self._keys else backoff
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh()
                backoff, delay = 1.0, self.refresh_interval
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning(
                    "JWKS refresh failed; keeping the keys we have", extra={"error": repr(error)}
                )
                delay = backoff
                backoff = min(backoff * 2, self.refresh_interval)

    def _may_refetch(self) -> bool:
        return self.clock() - self._last_attempt >= self.unknown_kid_cooldown

    def on_unknown_kid(self, kid: str) -> None:
        if self._session is None or not self._may_refetch():
            return
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(_log_failed_fetch)

    async def refresh_unknown(self, kid: str) -> bool:
        if kid in self._keys:
            return True
        if self._inflight is not None and not self._inflight.done():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.shield(self._inflight)
        elif self._session is not None and self._may_refetch():
            try:
                await self.refresh()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning("JWKS refetch for an unknown kid failed", extra={"error": repr(error)})
        return kid in self._keys


def _log_failed_fetch(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning("JWKS refetch for an unknown kid failed", extra={"error": repr(error)})


# -- verification -------------------------------------------------------------------------


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
    ) -> None:
        if (jwks_url is None) == (keys is None):
            raise ValueError("give exactly one of jwks_url or keys")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.clock = clock
        self.keys: KeySource = (
            keys
            if keys is not None
            else JwksKeys(
                jwks_url,  # type: ignore[arg-type]
                refresh_interval=refresh_interval,
                unknown_kid_cooldown=unknown_kid_cooldown,
            )
        )
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


def generate_signing_key() -> tuple[str, Ed25519PrivateKey]:
    """A fresh Ed25519 key and its thumbprint ``kid``."""
    private_key = Ed25519PrivateKey.generate()
    return key_thumbprint(private_key.public_key()), private_key


__all__: Sequence[str] = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHM",
    "Identity",
    "InvalidToken",
    "IssuedToken",
    "JwksKeys",
    "KeySource",
    "StaticKeys",
    "TokenSigner",
    "TokenVerifier",
    "encode_jwt",
    "generate_signing_key",
    "jwks_document",
    "key_thumbprint",
    "keys_from_jwks",
    "public_jwk",
]

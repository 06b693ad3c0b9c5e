"""The token format: EdDSA (Ed25519) compact JWS, its errors, the identity it proves, and JWKs.

Everything here is pure (no I/O): encoding and signing a JWT, the RFC 7638 thumbprint
that names a key (``kid``), public keys as JWKs and JWKS documents, and reading the
usable keys back out of a JWKS document.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

log = logging.getLogger("switchyard.tokens")

ALGORITHM = "EdDSA"
ACCESS_TOKEN_TYPE = "at+jwt"

# Seconds since the epoch (signing, verifying) or a monotonic reading (JWKS refetch pacing).
Clock = Callable[[], float]


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

"""Issuing access tokens (the auth service, and tests that need tokens)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from switchyard.tokens.codec import ACCESS_TOKEN_TYPE, ALGORITHM, Clock, encode_jwt, key_thumbprint


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


def generate_signing_key() -> tuple[str, Ed25519PrivateKey]:
    """A fresh Ed25519 key and its thumbprint ``kid``."""
    private_key = Ed25519PrivateKey.generate()
    return key_thumbprint(private_key.public_key()), private_key

"""Access tokens: EdDSA (Ed25519) JWTs, signed by auth and verified by every service.

- :mod:`switchyard.tokens.codec` — the format: ``encode_jwt``, ``Identity``, ``InvalidToken``,
  JWKs (``public_jwk``, ``jwks_document``, ``keys_from_jwks``, ``key_thumbprint``);
- :mod:`switchyard.tokens.signing` — ``TokenSigner`` and ``generate_signing_key`` (auth, tests);
- :mod:`switchyard.tokens.keys` — key sources: ``StaticKeys`` (in-process), ``JwksKeys`` (a URL);
- :mod:`switchyard.tokens.verifier` — ``TokenVerifier``, the gateway's hot path.

Usage::

    verifier = TokenVerifier(jwks_url=".../.well-known/jwks.json", issuer=..., audience=...)
    await verifier.start()           # first JWKS fetch + background refresh
    identity = verifier.verify(token)               # sync, raises InvalidToken(reason)
    identity = await verifier.verify_async(token)   # also refetches on an unknown kid
    await verifier.close()

Tests (and the auth service itself) use an in-process key source instead of a
URL: ``TokenVerifier(keys=StaticKeys({kid: public_key}), issuer=..., audience=...)``.
Services build theirs from settings with ``switchyard.authn.token_verifier(settings)``.
"""

from switchyard.tokens.codec import (
    ACCESS_TOKEN_TYPE,
    ALGORITHM,
    Clock,
    Identity,
    InvalidToken,
    b64url_decode,
    b64url_encode,
    encode_jwt,
    jwks_document,
    key_thumbprint,
    keys_from_jwks,
    public_jwk,
    public_key_bytes,
)
from switchyard.tokens.keys import JwksKeys, KeySource, StaticKeys
from switchyard.tokens.signing import IssuedToken, TokenSigner, generate_signing_key
from switchyard.tokens.verifier import DEFAULT_LEEWAY, MAX_TOKEN_CHARS, TokenVerifier

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHM",
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_CHARS",
    "Clock",
    "Identity",
    "InvalidToken",
    "IssuedToken",
    "JwksKeys",
    "KeySource",
    "StaticKeys",
    "TokenSigner",
    "TokenVerifier",
    "b64url_decode",
    "b64url_encode",
    "encode_jwt",
    "generate_signing_key",
    "jwks_document",
    "key_thumbprint",
    "keys_from_jwks",
    "public_jwk",
    "public_key_bytes",
]

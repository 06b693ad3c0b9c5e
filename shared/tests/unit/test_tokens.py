"""The shared access-token verifier: what it accepts and every way it refuses."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from switchyard.tokens import (
    Identity,
    InvalidToken,
    StaticKeys,
    TokenSigner,
    TokenVerifier,
    b64url_encode,
    encode_jwt,
    generate_signing_key,
    jwks_document,
    key_thumbprint,
    keys_from_jwks,
)

ISSUER = "https://auth.test"
AUDIENCE = "switchyard"
NOW = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> tuple[str, Ed25519PrivateKey]:
    return generate_signing_key()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(key: tuple[str, Ed25519PrivateKey], clock: Clock) -> TokenVerifier:
    kid, private = key
    return TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer=ISSUER, audience=AUDIENCE, clock=clock
    )


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 900,
        "jti": "jti-1",
        "roles": ["customer"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def header(key_id: object, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"alg": "EdDSA", "typ": "at+jwt", "kid": key_id}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_signer_token_verifies_to_identity(verifier: TokenVerifier, key, clock: Clock) -> None:
    kid, private = key
    issued = TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE, clock=clock).issue(
        "user-7", ["contractor", "admin"]
    )
    identity = verifier.verify(issued.token)
    assert identity == Identity(
        user_id="user-7",
        roles=frozenset({"contractor", "admin"}),
        token_id=issued.token_id,
        expires_at=NOW + 900,
        issued_at=NOW,
    )
    assert (
        identity.is_admin and identity.has_role("contractor") and not identity.has_role("customer")
    )
    assert identity.claims["iss"] == ISSUER


def test_audience_may_be_a_list(verifier: TokenVerifier, key) -> None:
    kid, private = key
    token = encode_jwt(header(kid), claims(aud=["other", AUDIENCE]), private)
    assert verifier.verify(token).user_id == "user-1"


def test_bad_signature(verifier: TokenVerifier, key) -> None:
    kid, _ = key
    forged = encode_jwt(header(kid), claims(), Ed25519PrivateKey.generate())
    assert reason(verifier, forged) == "bad-signature"


def test_tampered_payload(verifier: TokenVerifier, key) -> None:
    kid, private = key
    token = encode_jwt(header(kid), claims(), private)
    head, _, sig = token.split(".")
    tampered = b64url_encode(json.dumps(claims(roles=["admin"])).encode())
    assert reason(verifier, f"{head}.{tampered}.{sig}") == "bad-signature"


def test_alg_none_refused(verifier: TokenVerifier, key) -> None:
    kid, _ = key
    head = b64url_encode(json.dumps(header(kid, alg="none")).encode())
    body = b64url_encode(json.dumps(claims()).encode())
    assert reason(verifier, f"{head}.{body}.") == "malformed"
    # Even dressed up with a signature-sized tail, "none" never reaches a key.
    assert reason(verifier, f"{head}.{body}.{'A' * 86}") == "algorithm-not-allowed"


def test_hs256_with_the_public_key_as_secret_refused(verifier: TokenVerifier, key) -> None:
    kid, private = key
    public_jwk = json.dumps(jwks_document({kid: private.public_key()})["keys"][0]).encode()
    head = b64url_encode(json.dumps(header(kid, alg="HS256")).encode())
    body = b64url_encode(json.dumps(claims()).encode())
    mac = hmac.new(public_jwk, f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{b64url_encode(mac)}"
    assert reason(verifier, token) == "malformed"  # a 32-byte MAC is not an Ed25519 signature
    padded = f"{head}.{body}.{b64url_encode(mac * 2)}"
    assert reason(verifier, padded) == "algorithm-not-allowed"


def test_expired_and_leeway(verifier: TokenVerifier, key, clock: Clock) -> None:
    kid, private = key
    token = encode_jwt(header(kid), claims(exp=int(NOW) - 10), private)
    assert verifier.verify(token).user_id == "user-1"  # within the 30 s leeway
    clock.now = NOW + 21
    assert reason(verifier, token) == "expired"


def test_not_yet_valid(verifier: TokenVerifier, key) -> None:
    kid, private = key
    later = int(NOW) + 120
    assert reason(verifier, encode_jwt(header(kid), claims(nbf=later), private)) == "not-yet-valid"
    assert reason(verifier, encode_jwt(header(kid), claims(iat=later), private)) == "not-yet-valid"
    slightly = int(NOW) + 20
    assert verifier.verify(encode_jwt(header(kid), claims(nbf=slightly), private))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"aud": "someone-else"}, "wrong-audience"),
        ({"aud": ["a", "b"]}, "wrong-audience"),
        ({"iss": "https://evil.test"}, "wrong-issuer"),
        ({"exp": None}, "missing-claim"),
        ({"exp": "soon"}, "missing-claim"),
        ({"exp": True}, "missing-claim"),
        ({"iat": None}, "missing-claim"),
        ({"sub": None}, "missing-claim"),
        ({"sub": ""}, "missing-claim"),
        ({"jti": None}, "missing-claim"),
        ({"roles": "admin"}, "malformed"),
        ({"roles": [1]}, "malformed"),
    ],
)
def test_claim_checks(
    verifier: TokenVerifier, key, override: dict[str, object], expected: str
) -> None:
    kid, private = key
    assert reason(verifier, encode_jwt(header(kid), claims(**override), private)) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"typ": "JWT"}, "wrong-type"),
        ({"typ": None}, "wrong-type"),
        ({"alg": "ES256"}, "algorithm-not-allowed"),
        ({"alg": "RS256"}, "algorithm-not-allowed"),
        ({"crit": ["exp"]}, "unsupported-header"),
    ],
)
def test_header_checks(
    verifier: TokenVerifier, key, override: dict[str, object], expected: str
) -> None:
    kid, private = key
    assert reason(verifier, encode_jwt(header(kid, **override), claims(), private)) == expected


@pytest.mark.parametrize("bad_kid", [None, 5, ""])
def test_header_needs_a_string_kid(verifier: TokenVerifier, key, bad_kid: object) -> None:
    _, private = key
    assert reason(verifier, encode_jwt(header(bad_kid), claims(), private)) == "malformed"


def test_typ_accepts_media_type_form(verifier: TokenVerifier, key) -> None:
    kid, private = key
    token = encode_jwt(header(kid, typ="application/at+jwt"), claims(), private)
    assert verifier.verify(token).user_id == "user-1"


def test_unknown_kid(verifier: TokenVerifier) -> None:
    kid, private = generate_signing_key()
    assert reason(verifier, encode_jwt(header(kid), claims(), private)) == "unknown-kid"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "x" * 9000, "eyJ.eyJ.AAAA", "a b.c d.e f"],
)
def test_malformed_tokens(verifier: TokenVerifier, token: str) -> None:
    assert reason(verifier, token) == "malformed"


def test_non_canonical_signature_encoding_refused(verifier: TokenVerifier, key) -> None:
    kid, private = key
    token = encode_jwt(header(kid), claims(), private)
    head, body, sig = token.split(".")
    # The last base64url character carries 4 unused bits; flipping them must not verify.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = sig[:-1] + alphabet[last ^ 0b0001]
    assert reason(verifier, f"{head}.{body}.{twin}") == "malformed"


def test_header_json_garbage(verifier: TokenVerifier, key) -> None:
    _, private = key
    signature = b64url_encode(private.sign(b"x"))
    assert reason(verifier, f"{b64url_encode(b'[1,2]')}.e30.{signature}") == "malformed"
    assert reason(verifier, f"{b64url_encode(b'{nope')}.e30.{signature}") == "malformed"


def test_removed_key_refused(verifier: TokenVerifier, key) -> None:
    kid, private = key
    token = encode_jwt(header(kid), claims(), private)
    assert verifier.verify(token)
    assert isinstance(verifier.keys, StaticKeys)
    verifier.keys.remove(kid)
    assert reason(verifier, token) == "unknown-kid"


def test_jwks_round_trip_and_thumbprint(key) -> None:
    kid, private = key
    assert kid == key_thumbprint(private.public_key())
    document = jwks_document({kid: private.public_key()})
    document["keys"].append({"kty": "RSA", "kid": "rsa", "n": "x", "e": "AQAB"})
    document["keys"].append({"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"})
    document["keys"].append(
        {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": document["keys"][0]["x"]}
    )
    parsed = keys_from_jwks(document)
    assert list(parsed) == [kid]
    # An unchanged key keeps its object, so a refresh does not rebuild keys.
    again = keys_from_jwks(document, previous=parsed)
    assert again[kid] is parsed[kid]
    with pytest.raises(ValueError):
        keys_from_jwks({"nokeys": []})


def test_rfc8037_thumbprint_vector() -> None:
    # RFC 8037 appendix A.3: the thumbprint of the example Ed25519 public key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from switchyard.tokens import b64url_decode

    public = Ed25519PublicKey.from_public_bytes(
        b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    )
    assert key_thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_verifier_needs_exactly_one_key_source() -> None:
    with pytest.raises(ValueError):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://x", keys=StaticKeys())


def test_real_clock_default(key) -> None:
    kid, private = key
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer=ISSUER, audience=AUDIENCE
    )
    token = TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE).issue("u", [])
    identity = verifier.verify(token.token)
    assert identity.roles == frozenset()
    assert abs(identity.issued_at - time.time()) < 60

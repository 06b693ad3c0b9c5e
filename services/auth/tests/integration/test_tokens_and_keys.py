"""Access tokens at the HTTP edge: forgeries refused, key rotation, JWKS and discovery."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from auth_svc import keys_cli
from auth_svc.keys import KEY_RING
from switchyard.testing import eventually
from switchyard.tokens import (
    InvalidToken,
    TokenVerifier,
    b64url_decode,
    b64url_encode,
    encode_jwt,
    generate_signing_key,
    public_jwk,
)

from .conftest import AUDIENCE, ISSUER, AuthClient

pytestmark = pytest.mark.integration


def kid_of(token: str) -> str:
    return str(json.loads(b64url_decode(token.split(".")[0]))["kid"])


def claims_of(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


async def test_forged_tokens_get_401(auth: AuthClient) -> None:
    pair = await auth.signed_up("forgery.target@example.com")
    genuine = pair["access_token"]
    assert (await auth.call("GET", "/me", token=genuine)).status == 200

    key = auth.app[KEY_RING].active()
    now = int(auth.clock.now().timestamp())
    claims = claims_of(genuine)
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid}

    def signed(header_over: dict[str, Any] | None = None, **claim_over: Any) -> str:
        return encode_jwt(
            {**header, **(header_over or {})}, {**claims, **claim_over}, key.private_key
        )

    head_b64 = lambda h: b64url_encode(json.dumps(h).encode())  # noqa: E731
    body_b64 = b64url_encode(json.dumps(claims).encode())
    secret = json.dumps(public_jwk(key.kid, key.public_key)).encode()
    hs_head = head_b64({**header, "alg": "HS256"})
    hs_mac = hmac.new(secret, f"{hs_head}.{body_b64}".encode(), hashlib.sha256).digest()
    other_kid, other_key = generate_signing_key()

    forgeries = {
        "bad signature": encode_jwt(header, claims, generate_signing_key()[1]),
        "alg none": f"{head_b64({**header, 'alg': 'none'})}.{body_b64}.",
        "HS256 with the public key": f"{hs_head}.{body_b64}.{b64url_encode(hs_mac)}",
        "expired": signed(exp=now - 3600, iat=now - 4500, nbf=now - 4500),
        "not yet valid": signed(nbf=now + 3600),
        "wrong aud": signed(aud="another-audience"),
        "wrong iss": signed(iss="https://evil.example"),
        "wrong typ": signed({"typ": "JWT"}),
        "unknown kid": encode_jwt({**header, "kid": other_kid}, claims, other_key),
        "tampered roles": genuine.split(".")[0]
        + "."
        + b64url_encode(json.dumps({**claims, "roles": ["admin"]}).encode())
        + "."
        + genuine.split(".")[2],
    }
    for name, token in forgeries.items():
        reply = await auth.call("GET", "/me", token=token)
        assert reply.status == 401, name
        assert reply.headers["Content-Type"] == "application/problem+json", name
        assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"], name
    # No token at all: 401 as well.
    assert (await auth.call("GET", "/me")).status == 401


async def test_key_rotation(auth: AuthClient) -> None:
    email = "rotation@example.com"
    old_pair = await auth.signed_up(email)
    old_token = old_pair["access_token"]
    old_kid = kid_of(old_token)
    keys_dir = str(auth.settings.keys_dir)

    # Another service's verifier, reading our JWKS over HTTP.
    jwks_url = auth.server.url + "/.well-known/jwks.json"
    remote = TokenVerifier(
        jwks_url=jwks_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        unknown_kid_cooldown=0,
        clock=lambda: auth.clock.now().timestamp(),
    )
    await remote.start()
    try:
        assert remote.verify(old_token).user_id == claims_of(old_token)["sub"]

        assert keys_cli.run(["--dir", keys_dir, "rotate"]) == 0
        auth.clock.advance(60)  # the CLI stamps real time; the service's clock is manual
        new_token = await _token_signed_by_new_key(auth, email, old_kid)
        new_kid = kid_of(new_token)
        assert new_kid != old_kid

        # Both keys are published; both tokens work, here and in the other service.
        jwks = (await auth.call("GET", "/.well-known/jwks.json")).body
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
        for token in (old_token, new_token):
            assert (await auth.call("GET", "/me", token=token)).status == 200
        assert (await remote.verify_async(new_token)).user_id == claims_of(new_token)["sub"]
        assert remote.verify(old_token)

        # The signing key cannot be removed; the old one can.
        assert keys_cli.run(["--dir", keys_dir, "remove", "--", new_kid]) == 1
        assert keys_cli.run(["--dir", keys_dir, "remove", "--", old_kid]) == 0

        async def old_key_gone() -> bool:
            return old_kid not in auth.app[KEY_RING].public_keys

        await eventually(old_key_gone, timeout=30)
        assert (await auth.call("GET", "/me", token=old_token)).status == 401
        assert (await auth.call("GET", "/me", token=new_token)).status == 200
        jwks = (await auth.call("GET", "/.well-known/jwks.json")).body
        assert [k["kid"] for k in jwks["keys"]] == [new_kid]

        await remote.keys.refresh()  # type: ignore[attr-defined]
        with pytest.raises(InvalidToken) as refused:
            remote.verify(old_token)
        assert refused.value.reason == "unknown-kid"
        assert remote.verify(new_token)
    finally:
        await remote.close()


async def _token_signed_by_new_key(auth: AuthClient, email: str, old_kid: str) -> str:
    """The service notices the new key within its reload interval; log in until it signs."""
    deadline = time.monotonic() + 30  # generous: the machine may be loaded
    while time.monotonic() < deadline:
        reply = await auth.login(email)
        assert reply.status == 200
        token = str(reply.body["access_token"])
        if kid_of(token) != old_kid:
            return token
        await asyncio.sleep(0.1)
    raise AssertionError("the new key never signed")


async def test_access_token_shape(auth: AuthClient) -> None:
    pair = await auth.signed_up("shape@example.com")
    token = pair["access_token"]
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": header["kid"], "typ": "at+jwt"}
    claims = claims_of(token)
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "roles"} <= set(claims)
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 900
    assert claims["roles"] == ["customer"]
    refresh = pair["refresh_token"]
    assert len(refresh.split(".")[1]) >= 43  # ≥ 256 bits of randomness


async def test_discovery_documents_with_cache_headers(auth: AuthClient) -> None:
    jwks = await auth.call("GET", "/.well-known/jwks.json")
    assert jwks.status == 200
    assert jwks.headers["Cache-Control"] == "public, max-age=300"
    key = jwks.body["keys"][0]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert "d" not in key  # never the private part
    again = await auth.call(
        "GET", "/.well-known/jwks.json", headers={"If-None-Match": jwks.headers["ETag"]}
    )
    assert again.status == 304

    config = await auth.call("GET", "/.well-known/openid-configuration")
    assert config.status == 200
    assert config.body["issuer"] == ISSUER
    assert config.body["jwks_uri"] == ISSUER + "/.well-known/jwks.json"
    assert config.headers["Cache-Control"] == "public, max-age=3600"

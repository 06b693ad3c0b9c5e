"""The test JWKS server every service's tests use: a real verifier fetching its keys over
HTTP accepts its tokens, follows a key rotation and drops a retired key."""

from __future__ import annotations

import time

import pytest

from switchyard.authn import token_verifier
from switchyard.settings import ServiceSettings
from switchyard.testing import JwksServer
from switchyard.tokens import InvalidToken, TokenVerifier, generate_signing_key

pytestmark = pytest.mark.integration


async def test_tokens_verify_against_the_served_key_set(jwks_server: JwksServer) -> None:
    verifier = TokenVerifier(
        jwks_url=jwks_server.jwks_url, issuer=jwks_server.issuer, audience=jwks_server.audience
    )
    async with verifier:
        identity = verifier.verify(jwks_server.token("user-7", ["admin"], claims={"sid": "s1"}))
        assert identity.user_id == "user-7" and identity.is_admin
        assert identity.claims["sid"] == "s1"
        assert jwks_server.fetches == 1
        with pytest.raises(InvalidToken) as expired:
            verifier.verify(
                jwks_server.signer_with(clock=lambda: time.time() - 3600).issue("u", []).token
            )
        assert expired.value.reason == "expired"
        _, foreign_key = generate_signing_key()
        forged = jwks_server.signer_with(private_key=foreign_key).issue("u", ["admin"]).token
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(forged)
        assert refused.value.reason == "bad-signature"


async def test_rotation_and_retirement_reach_a_verifier(jwks_server: JwksServer) -> None:
    settings = ServiceSettings(
        jwks_url=jwks_server.jwks_url,
        auth_issuer=jwks_server.issuer,
        jwt_audience=jwks_server.audience,
    )
    verifier = token_verifier(settings, unknown_kid_cooldown=0)
    async with verifier:
        old_kid = jwks_server.kid
        old_token = jwks_server.token("before")
        new_kid = jwks_server.rotate()
        assert jwks_server.kids == [old_kid, new_kid]
        new_token = jwks_server.token("after")
        # The verifier learns the new kid by refetching (it did not know it yet).
        assert (await verifier.verify_async(new_token)).user_id == "after"
        assert verifier.verify(old_token).user_id == "before"  # still published
        jwks_server.retire(old_kid)
        with pytest.raises(ValueError, match="rotate first"):
            jwks_server.retire(new_kid)
        await verifier.keys.refresh_unknown("refetch-now")  # a refresh, as its timer would
        with pytest.raises(InvalidToken) as retired:
            verifier.verify(old_token)
        assert retired.value.reason == "unknown-kid"
        assert jwks_server.fetches >= 3

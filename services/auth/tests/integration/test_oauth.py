"""A standard OAuth client against auth (issue 12): authlib reads the RFC 8414 metadata, checks
it, and refreshes a session at the advertised token endpoint (RFC 6749 §6), with rotation
and reuse detection as ``POST refresh`` has them; errors are RFC 6749 §5.2 bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from auth_svc.app import create_app
from auth_svc.domain.clock import ManualClock
from switchyard.testing.servers import free_port
from switchyard.tokens import TokenVerifier

from .conftest import AUDIENCE, AuthClient, EventLog, auth_settings_for, token_claims

pytestmark = [pytest.mark.integration]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def issuer_auth(
    settings_overrides: dict[str, Any], event_log: EventLog, start_app: Any, tmp_path: Path
) -> AsyncIterator[AuthClient]:
    """Auth whose issuer is the address it is reached at, so the advertised endpoints work."""
    port = free_port()
    base = auth_settings_for(settings_overrides, tmp_path / "keys")
    settings = base.model_copy(update={"auth_issuer": f"http://127.0.0.1:{port}"})
    clock = ManualClock()
    server = await start_app(create_app(settings, clock=clock), port=port)
    assert server.url == settings.auth_issuer
    async with aiohttp.ClientSession(server.url) as http:
        yield AuthClient(http, server, clock, settings, event_log)


async def test_authlib_discovers_the_token_endpoint_and_refreshes_there(
    issuer_auth: AuthClient,
) -> None:
    auth = issuer_auth
    issuer = auth.settings.auth_issuer
    pair = await auth.signed_up("oauth-client@example.com")

    async with httpx.AsyncClient() as plain:
        reply = await plain.get(issuer + "/.well-known/oauth-authorization-server")
        assert reply.status_code == 200
        document = reply.json()
        openid = (await plain.get(issuer + "/.well-known/openid-configuration")).json()
    assert openid == document  # one document, both paths (RFC 8414 §5)

    metadata = AuthorizationServerMetadata(document)
    # authlib's checks, each one: issuer (scheme, no query), endpoints, JWKS, grant types,
    # client authentication methods, ...
    for key in AuthorizationServerMetadata.REGISTRY_KEYS:
        if key == "response_types_supported":
            continue
        getattr(metadata, f"validate_{key}")()
    # ... except one we refuse to satisfy with a lie: there is no authorization endpoint, so
    # no response type is supported, and RFC 8414 §2 omits claims with zero elements.
    with pytest.raises(ValueError, match="response_types_supported"):
        metadata.validate()
    assert "authorization_endpoint" not in document
    assert not {k for k in document if k.startswith(("id_token", "userinfo", "subject_types"))}
    assert document["issuer"] == issuer
    assert document["grant_types_supported"] == ["refresh_token"]
    assert document["token_endpoint_auth_methods_supported"] == ["none"]

    client = AsyncOAuth2Client(
        client_id="switchyard-test-app",
        token_endpoint_auth_method="none",
        token={
            "access_token": pair["access_token"],
            "refresh_token": pair["refresh_token"],
            "token_type": "Bearer",
            "expires_in": pair["expires_in"],
        },
    )
    async with client:
        refreshed = await client.refresh_token(document["token_endpoint"])
        assert refreshed["token_type"] == "Bearer"
        assert refreshed["refresh_token"] != pair["refresh_token"]  # rotated
        verifier = TokenVerifier(
            jwks_url=document["jwks_uri"],
            issuer=issuer,
            audience=AUDIENCE,
            clock=lambda: auth.clock.now().timestamp(),
        )
        async with verifier:
            identity = await verifier.verify_async(refreshed["access_token"])
        assert identity.claims["sid"] == token_claims(pair["access_token"])["sid"]
        # The client calls the API with what it got.
        me = await client.get(issuer + "/api/v1/auth/me")
        assert me.status_code == 200 and me.json()["email"] == "oauth-client@example.com"

        # The rotated-away token, presented again: reuse, the whole family ends.
        with pytest.raises(OAuthError) as reused:
            await client.refresh_token(
                document["token_endpoint"], refresh_token=pair["refresh_token"]
            )
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as ended:
            await client.refresh_token(
                document["token_endpoint"], refresh_token=refreshed["refresh_token"]
            )
        assert ended.value.error == "invalid_grant"
    await auth.events.wait_for("auth.session.reuse_detected")


async def test_token_endpoint_errors_are_rfc_6749_bodies(auth: AuthClient) -> None:
    pair = await auth.signed_up("oauth-errors@example.com")
    token = pair["refresh_token"]

    async def post(
        body: str | bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        async with auth.http.post(
            "/api/v1/auth/token", data=body, headers=FORM if headers is None else headers
        ) as response:
            return response.status, await response.json(content_type=None), response.headers

    cases: list[tuple[str | bytes, dict[str, str] | None, int, str]] = [
        (f"refresh_token={token}", None, 400, "invalid_request"),  # no grant_type
        ("grant_type=password&username=a&password=b", None, 400, "unsupported_grant_type"),
        ("grant_type=authorization_code&code=x", None, 400, "unsupported_grant_type"),
        ("grant_type=refresh_token", None, 400, "invalid_request"),
        ("grant_type=refresh_token&refresh_token=nope", None, 400, "invalid_grant"),
        (
            f"grant_type=refresh_token&refresh_token={token}&refresh_token={token}",
            None,
            400,
            "invalid_request",
        ),
        (f"grant_type=refresh_token&refresh_token={token}&scope=admin", None, 400, "invalid_scope"),
        (
            f'{{"grant_type": "refresh_token", "refresh_token": "{token}"}}',
            {"Content-Type": "application/json"},
            400,
            "invalid_request",
        ),
        (
            f"grant_type=refresh_token&refresh_token={token}",
            {**FORM, "Authorization": "Basic YXBwOnNlY3JldA=="},
            401,
            "invalid_client",
        ),
        (b"grant_type=refresh_token&refresh_token=%ff%fe", None, 400, "invalid_grant"),
        ("grant_type=refresh_token&refresh_token=" + "a" * 600, None, 400, "invalid_grant"),
    ]
    for body, headers, status, error in cases:
        got_status, got, got_headers = await post(body, headers)
        assert (got_status, got["error"]) == (status, error), (body, got)
        assert isinstance(got["error_description"], str)
        assert got_headers["Cache-Control"] == "no-store"

    # None of that touched the session: the token still refreshes once.
    status, body, headers = await post(f"grant_type=refresh_token&refresh_token={token}")
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert set(body) >= {"access_token", "refresh_token", "token_type", "expires_in"}

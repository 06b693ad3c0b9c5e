"""JWT checks at the gateway with the shared verifier against a real JWKS server."""

from __future__ import annotations

import time

import aiohttp
import pytest

from switchyard.tokens import generate_signing_key

from .conftest import GatewayFactory, Keys, Upstream, route_table


def tokens(keys: Keys) -> dict[str, str | None]:
    _, other_key = generate_signing_key()
    _, unknown_key = generate_signing_key()
    return {
        "valid": keys.token("user-42", ("customer",)),
        "expired": keys.signer_with(clock=lambda: time.time() - 3600)
        .issue("user-42", ["customer"])
        .token,
        "forged": keys.signer_with(private_key=other_key).issue("user-42", ["admin"]).token,
        "unknown-kid": keys.signer_with(private_key=unknown_key, kid="nobody")
        .issue("user-42", [])
        .token,
        "wrong-audience": keys.signer_with(audience="someone-else").issue("user-42", []).token,
        "garbage": "not.a.jwt",
        "missing": None,
    }


PROTECTED = {
    "valid": 200,
    "expired": 401,
    "forged": 401,
    "unknown-kid": 401,
    "wrong-audience": 401,
    "garbage": 401,
    "missing": 401,
}


@pytest.mark.parametrize("case", list(PROTECTED))
async def test_jwt_matrix(
    case: str,
    make_gateway: GatewayFactory,
    upstream: Upstream,
    keys: Keys,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    token = tokens(keys)[case]
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async with client.get(gateway.url + "/api/v1/chat/conversations", headers=headers) as response:
        assert response.status == PROTECTED[case]
        if response.status == 401:
            assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
            assert response.content_type == "application/problem+json"
            problem = await response.json()
            assert problem["status"] == 401 and problem["request_id"]
        else:
            seen = await response.json()
            assert seen["headers"]["x-user-id"] == "user-42"
            assert seen["headers"]["x-user-roles"] == "customer"
            assert seen["headers"]["authorization"] == f"Bearer {token}"

    # Public routes serve everyone; only a valid token makes the caller known upstream.
    async with client.post(
        gateway.url + "/api/v1/auth/login", headers=headers, json={}
    ) as response:
        assert response.status == 200
        seen = await response.json()
        if case == "valid":
            assert seen["headers"]["x-user-id"] == "user-42"
        else:
            assert "x-user-id" not in seen["headers"]

    refused_upstream = sum(1 for hit in upstream.hits if hit["path"].startswith("/api/v1/chat"))
    assert refused_upstream == (1 if case == "valid" else 0)


async def test_spoofed_identity_headers_are_stripped(
    make_gateway: GatewayFactory, upstream: Upstream, keys: Keys, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    spoof = {"X-User-Id": "admin", "X-User-Roles": "admin", "x-user-email": "root@x"}
    async with client.get(gateway.url + "/public/p", headers=spoof) as response:
        seen = await response.json()
    assert not any(name.startswith("x-user-") for name in seen["headers"])

    headers = {**spoof, "Authorization": "Bearer " + keys.token("user-5", ("contractor",))}
    async with client.get(gateway.url + "/api/v1/chat/c", headers=headers) as response:
        seen = await response.json()
    assert seen["headers"]["x-user-id"] == "user-5"
    assert seen["headers"]["x-user-roles"] == "contractor"
    assert "x-user-email" not in seen["headers"]


async def test_admin_route_needs_the_admin_role(
    make_gateway: GatewayFactory, upstream: Upstream, keys: Keys, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    customer = {"Authorization": "Bearer " + keys.token("u", ("customer",))}
    admin = {"Authorization": "Bearer " + keys.token("a", ("admin",))}
    async with client.get(gateway.url + "/admin/x", headers=customer) as response:
        assert response.status == 403
    async with client.get(gateway.url + "/admin/x", headers=admin) as response:
        assert response.status == 200


async def test_signed_download_links_are_public_only_with_a_signature(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.get(
        gateway.url + "/api/v1/files/f1/content?expires=9&signature=abc"
    ) as response:
        assert response.status == 200
    async with client.get(gateway.url + "/api/v1/files/f1/content") as response:
        assert response.status == 401


async def test_verified_tokens_are_cached_until_expiry(
    make_gateway: GatewayFactory, upstream: Upstream, keys: Keys, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    headers = {"Authorization": "Bearer " + keys.token("cached")}
    for _ in range(5):
        async with client.get(gateway.url + "/api/v1/chat/x", headers=headers) as response:
            assert response.status == 200
    assert gateway.tokens.misses == 1
    assert gateway.tokens.hits == 4

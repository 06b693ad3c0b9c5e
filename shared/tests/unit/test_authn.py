"""The JWKS client (against a real local JWKS server), the aiohttp middleware and
decorators (through real HTTP), and the Socket.IO connect helper."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from switchyard.authn import (
    IDENTITY,
    authn_middleware,
    check_roles,
    require_auth,
    require_roles,
    socketio_identity,
)
from switchyard.problems import Problem
from switchyard.settings import ServiceSettings
from switchyard.testing import eventually
from switchyard.tokens import (
    InvalidToken,
    JwksKeys,
    StaticKeys,
    TokenSigner,
    TokenVerifier,
    generate_signing_key,
    jwks_document,
)
from switchyard.web import new_app

ISSUER = "https://auth.test"
AUDIENCE = "switchyard"


class JwksServer:
    """A JWKS endpoint whose key set the test changes, counting fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.fail = False
        self.app = web.Application()
        self.app.router.add_get("/.well-known/jwks.json", self.serve)

    async def serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fail:
            return web.Response(status=503)
        return web.json_response(jwks_document(self.keys))


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def jwks(start_app):  # type: ignore[no-untyped-def]
    server = JwksServer()
    running = await start_app(server.app)
    server.url = running.url + "/.well-known/jwks.json"  # type: ignore[attr-defined]
    return server


async def test_jwks_keys_fetch_cooldown_and_removal(jwks) -> None:  # type: ignore[no-untyped-def]
    kid1, key1 = generate_signing_key()
    kid2, key2 = generate_signing_key()
    jwks.keys = {kid1: key1.public_key()}
    clock = ManualClock()
    source = JwksKeys(jwks.url, refresh_interval=3600, unknown_kid_cooldown=10, clock=clock)
    verifier = TokenVerifier(keys=source, issuer=ISSUER, audience=AUDIENCE)
    await verifier.start()
    try:
        assert jwks.fetches == 1
        token1 = TokenSigner(key1, kid1, issuer=ISSUER, audience=AUDIENCE).issue("u1", ["customer"])
        token2 = TokenSigner(key2, kid2, issuer=ISSUER, audience=AUDIENCE).issue("u2", ["customer"])
        for _ in range(50):
            assert verifier.verify(token1.token).user_id == "u1"
        assert jwks.fetches == 1  # cached: no fetch per verification

        # A new key is published; the unknown kid is refetched only after the cooldown.
        jwks.keys[kid2] = key2.public_key()
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify_async(token2.token)
        assert caught.value.reason == "unknown-kid"
        assert jwks.fetches == 1
        clock.now += 11
        assert (await verifier.verify_async(token2.token)).user_id == "u2"
        assert jwks.fetches == 2

        # A storm of unknown kids within the cooldown does not hammer the JWKS endpoint.
        junk = TokenSigner(
            generate_signing_key()[1], "junk", issuer=ISSUER, audience=AUDIENCE
        ).issue("x", [])
        for _ in range(20):
            with pytest.raises(InvalidToken):
                await verifier.verify_async(junk.token)
        assert jwks.fetches == 2

        # The old key is removed: after the next refresh its tokens are refused.
        del jwks.keys[kid1]
        await source.refresh()
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token1.token)
        assert caught.value.reason == "unknown-kid"
        assert verifier.verify(token2.token).user_id == "u2"

        # A failing JWKS endpoint keeps the keys we have.
        jwks.fail = True
        with pytest.raises(aiohttp.ClientResponseError):
            await source.refresh()
        assert verifier.verify(token2.token).user_id == "u2"
    finally:
        await verifier.close()


async def test_jwks_sync_verify_schedules_background_refetch(jwks) -> None:  # type: ignore[no-untyped-def]
    kid1, key1 = generate_signing_key()
    kid2, key2 = generate_signing_key()
    jwks.keys = {kid1: key1.public_key()}
    verifier = TokenVerifier(
        jwks_url=jwks.url, issuer=ISSUER, audience=AUDIENCE, unknown_kid_cooldown=0
    )
    async with verifier:
        jwks.keys[kid2] = key2.public_key()
        token = TokenSigner(key2, kid2, issuer=ISSUER, audience=AUDIENCE).issue("u2", [])
        with pytest.raises(InvalidToken):
            verifier.verify(token.token)

        async def fetched() -> bool:
            return verifier.keys.get(kid2) is not None

        await eventually(fetched, timeout=20)  # 2 s of polling was tight on a loaded machine
        assert verifier.verify(token.token).user_id == "u2"


async def test_jwks_background_refresh_and_late_start(jwks) -> None:  # type: ignore[no-untyped-def]
    kid1, key1 = generate_signing_key()
    jwks.fail = True  # auth is not up yet when the service starts
    source = JwksKeys(jwks.url, refresh_interval=0.1, unknown_kid_cooldown=0)
    await source.start()
    try:
        assert not source.has_keys
        jwks.fail = False
        jwks.keys = {kid1: key1.public_key()}

        async def has_keys() -> bool:
            return source.has_keys

        await eventually(has_keys, timeout=20)  # 4 s of polling was tight on a loaded machine
        assert source.kids == [kid1]
    finally:
        await source.close()


# -- aiohttp middleware and decorators ------------------------------------------------------


@pytest.fixture
def signing() -> tuple[str, Any]:
    return generate_signing_key()


@pytest.fixture
async def protected_app(start_app, signing):  # type: ignore[no-untyped-def]
    kid, private = signing
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer=ISSUER, audience=AUDIENCE
    )
    app = new_app(ServiceSettings(environment="test", service_name="demo"))
    app.middlewares.append(authn_middleware(verifier))

    async def public(request: web.Request) -> web.Response:
        identity = request.get(IDENTITY)
        return web.json_response({"user": identity.user_id if identity else None})

    @require_auth
    async def me(request: web.Request) -> web.Response:
        identity = request[IDENTITY]
        return web.json_response({"user": identity.user_id, "roles": sorted(identity.roles)})

    @require_roles("admin")
    async def admin(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/public", public)
    app.router.add_get("/me", me)
    app.router.add_get("/admin", admin)
    server = await start_app(app)
    signer = TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE)
    return server, signer


async def test_middleware_and_decorators(protected_app) -> None:  # type: ignore[no-untyped-def]
    server, signer = protected_app
    customer = signer.issue("c1", ["customer"]).token
    admin = signer.issue("a1", ["admin"]).token
    other_kid, other_key = generate_signing_key()
    forged = (
        TokenSigner(other_key, signer.kid, issuer=ISSUER, audience=AUDIENCE)
        .issue("a1", ["admin"])
        .token
    )

    async with aiohttp.ClientSession(server.url) as http:

        async def call(path: str, token: str | None = None) -> tuple[int, Any, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(path, headers=headers) as response:
                return response.status, await response.json(content_type=None), response.headers

        assert (await call("/public"))[:2] == (200, {"user": None})
        assert (await call("/public", customer))[:2] == (200, {"user": "c1"})
        status, body, headers = await call("/me")
        assert status == 401 and body["type"].endswith("/unauthorized")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert headers["Content-Type"] == "application/problem+json"
        assert (await call("/me", customer))[:2] == (200, {"user": "c1", "roles": ["customer"]})
        status, body, _ = await call("/admin", customer)
        assert status == 403 and body["type"].endswith("/forbidden")
        assert (await call("/admin", admin))[:2] == (200, {"ok": True})
        status, _, headers = await call("/admin", forged)
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        # A bad token is refused even on a public route; health endpoints ignore it.
        assert (await call("/public", "garbage"))[0] == 401
        assert (await call("/healthz", "garbage"))[0] == 200
        async with http.get("/me", headers={"Authorization": "Basic abc"}) as response:
            assert response.status == 401


async def test_public_paths_ignore_a_token_that_does_not_verify(start_app, signing) -> None:  # type: ignore[no-untyped-def]
    kid, private = signing
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer=ISSUER, audience=AUDIENCE
    )
    app = new_app(ServiceSettings(environment="test", service_name="demo"))
    app.middlewares.append(authn_middleware(verifier, public_paths={"/refresh"}))

    async def who(request: web.Request) -> web.Response:
        identity = request.get(IDENTITY)
        return web.json_response({"user": identity.user_id if identity else None})

    app.router.add_get("/refresh", who)
    app.router.add_get("/me", require_auth(who))
    server = await start_app(app)
    expired = TokenSigner(
        private, kid, issuer=ISSUER, audience=AUDIENCE, clock=lambda: time.time() - 3600
    ).issue("c1", ["customer"])
    valid = TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE).issue("c1", []).token

    async with aiohttp.ClientSession(server.url) as http:

        async def call(path: str, token: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(path, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        assert await call("/refresh", expired.token) == (200, {"user": None})
        assert await call("/refresh", "garbage") == (200, {"user": None})
        assert await call("/refresh", valid) == (200, {"user": "c1"})
        assert (await call("/me", expired.token))[0] == 401
        assert (await call("/me", valid)) == (200, {"user": "c1"})


async def test_socketio_identity(signing) -> None:  # type: ignore[no-untyped-def]
    from socketio.exceptions import ConnectionRefusedError as Refused

    kid, private = signing
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer=ISSUER, audience=AUDIENCE
    )
    token = (
        TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE).issue("u1", ["customer"]).token
    )
    assert (await socketio_identity(verifier, {}, {"token": token})).user_id == "u1"
    environ = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert (await socketio_identity(verifier, environ, None)).user_id == "u1"
    for auth in (None, {}, {"token": "nope"}, {"token": 5}):
        with pytest.raises(Refused) as caught:
            await socketio_identity(verifier, {}, auth)
        assert caught.value.error_args["message"] == "unauthorized"
        assert caught.value.error_args["data"]["reason"] in {"missing", "malformed"}


def test_check_roles() -> None:
    kid, private = generate_signing_key()
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer=ISSUER, audience=AUDIENCE
    )
    identity = verifier.verify(
        TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE).issue("u", ["customer"]).token
    )
    check_roles(identity, "customer", "admin")
    with pytest.raises(Problem) as caught:
        check_roles(identity, "admin")
    assert caught.value.status == 403

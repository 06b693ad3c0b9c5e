"""Revocation reaches every service within seconds (issue 12): auth announces each ended session
(``auth.session.revoked``) and lists the revoked ones for services starting up; payments,
file and notification, called directly, refuse the session's access tokens within 2 s, and so
does the gateway (verified-token cache or not) in front of an upstream that checks nothing.

Real auth, real services, the real broker and the embedded store; nothing in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from pymongo import AsyncMongoClient

from auth_svc.entrypoints.http import REVOKED_SESSIONS_PATH
from file_svc.app import create_app as create_file
from file_svc.settings import FileSettings
from gateway_svc.app import Gateway
from gateway_svc.app import create_app as create_gateway
from notification_svc.app import create_app as create_notification
from notification_svc.settings import NotificationSettings
from payments_svc.app import create_app as create_payments
from payments_svc.settings import PaymentsSettings
from switchyard.revocation import REVOCATION_FEED
from switchyard.testing import Stopwatch, eventually
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.testing.servers import AppServer

from .conftest import AUDIENCE, ISSUER, AuthClient, gateway_settings, token_claims

pytestmark = [pytest.mark.integration]


@dataclass
class Service:
    name: str
    server: AppServer
    path: str  # a GET that needs an access token

    async def status(self, token: str) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                self.server.url + self.path, headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            return response.status


@pytest.fixture
async def start_service(
    auth: AuthClient,
    settings_overrides: dict[str, Any],
    start_app: Any,
    mongo_url: str,
    tmp_path: Path,
) -> AsyncIterator[Callable[[str], Any]]:
    """``await start_service("payments")``: the service on its own database, verifying auth's
    tokens itself (auth's JWKS; its revoked-session list beside it), once its feed has read
    auth's list."""
    databases: list[str] = []

    async def start(name: str) -> Service:
        database = f"{settings_overrides['mongo_database']}_{name}"
        databases.append(database)
        common = {
            **settings_overrides,
            "mongo_database": database,
            "jwks_url": f"{auth.server.url}/.well-known/jwks.json",
            "auth_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
        }
        if name == "payments":
            app = create_payments(PaymentsSettings(**common))
            path = "/api/v1/payments/wallet"
        elif name == "file":
            app = create_file(
                FileSettings(
                    **common, storage=str(tmp_path / "files"), spool_dir=tmp_path / "spool"
                )
            )
            path = "/api/v1/files"
        else:
            app = create_notification(NotificationSettings(**common))
            path = "/api/v1/notifications/preferences"
        server = await start_app(app)
        feed = app[REVOCATION_FEED]

        async def read() -> bool:
            return feed.fetched.is_set()

        await eventually(read, timeout=10)
        return Service(name, server, path)

    yield start
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        for database in databases:
            await client.drop_database(database)
    finally:
        await client.close()


class Door(Protocol):
    """Something that answers a request made with an access token: a service, the gateway."""

    name: str

    async def status(self, token: str) -> int: ...


# How long to poll at all: a revocation that never arrives fails here. The 2 s of issue 12 is
# checked on the time the CPUs were free (Stopwatch): auth, the services, the broker and the
# store share two cores with other test workers, so wall time alone flakes on a loaded machine.
POLL_DEADLINE = 30.0


async def refused_within(services: Sequence[Door], token: str, seconds: float) -> float:
    """How long until every service answers 401 to ``token``; fails when that took more
    than ``seconds`` besides the time the machine's CPUs were contended."""
    clock = Stopwatch()
    waiting = list(services)
    while waiting:
        statuses = await asyncio.gather(*(service.status(token) for service in waiting))
        waiting = [s for s, status in zip(waiting, statuses, strict=True) if status != 401]
        if waiting:
            assert clock.elapsed < POLL_DEADLINE, f"still accepted by {[s.name for s in waiting]}"
            await asyncio.sleep(0.05)
    assert clock.within(seconds), f"refused after {clock.report()}"
    return clock.elapsed


async def test_logout_all_reaches_every_service_called_directly_within_2_s(
    auth: AuthClient, start_service: Callable[[str], Any]
) -> None:
    services = [await start_service(name) for name in ("payments", "file", "notification")]
    first = await auth.signed_up("revoked-everywhere@example.com")
    second = await auth.login("revoked-everywhere@example.com")
    assert second.status == 200
    tokens = [first["access_token"], second.body["access_token"]]
    for service in services:
        for token in tokens:
            assert await service.status(token) == 200, service.name

    ended = await auth.post("/logout-all", token=tokens[0])
    assert ended.status == 204
    for token in tokens:  # both sessions of the user
        await refused_within(services, token, 2.0)

    # A new sign-in is a new session: accepted everywhere.
    again = await auth.login("revoked-everywhere@example.com")
    for service in services:
        assert await service.status(again.body["access_token"]) == 200


async def test_a_service_started_after_the_revocation_refuses_at_once(
    auth: AuthClient, start_service: Callable[[str], Any]
) -> None:
    """A restarted service is not blind: it reads auth's list before (and while) it serves."""
    pair = await auth.signed_up("restarted@example.com")
    token = pair["access_token"]
    ended = await auth.post("/logout-all", token=token)
    assert ended.status == 204
    payments = await start_service("payments")
    assert await payments.status(token) == 401


async def test_auth_lists_revoked_sessions_to_services_only(auth: AuthClient) -> None:
    pair = await auth.signed_up("listed@example.com")
    sid = token_claims(pair["access_token"])["sid"]
    assert (await auth.post("/logout", {"refresh_token": pair["refresh_token"]})).status == 204

    async def listing(authorization: str | None) -> tuple[int, Any]:
        headers = {"Authorization": authorization} if authorization else {}
        async with auth.http.get(REVOKED_SESSIONS_PATH, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    for refused in (None, "Bearer wrong-token", f"Bearer {pair['access_token']}", "Basic eDp5"):
        status, body = await listing(refused)
        assert status == 401, refused
        assert "items" not in body
    status, body = await listing(f"Bearer {TEST_INTERNAL_TOKEN}")
    assert status == 200
    listed = {item["session_id"]: item for item in body["items"]}
    assert sid in listed
    assert listed[sid]["user_id"] == token_claims(pair["access_token"])["sub"]
    assert listed[sid]["expires_at"].endswith("Z")

    # Once the session's last access token has expired it is no longer listed.
    auth.clock.advance(auth.settings.access_token_ttl + 1)
    status, body = await listing(f"Bearer {TEST_INTERNAL_TOKEN}")
    assert status == 200 and sid not in {item["session_id"] for item in body["items"]}


async def test_the_list_pages_in_session_order(auth: AuthClient) -> None:
    await auth.signed_up("paged@example.com")
    for _ in range(4):
        assert (await auth.login("paged@example.com")).status == 200
    login = await auth.login("paged@example.com")
    assert (await auth.post("/logout-all", token=login.body["access_token"])).status == 204
    seen: list[str] = []
    cursor: str | None = None
    headers = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        async with auth.http.get(REVOKED_SESSIONS_PATH, params=params, headers=headers) as reply:
            assert reply.status == 200
            body = await reply.json()
        assert len(body["items"]) <= 2
        seen.extend(item["session_id"] for item in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 6 and seen == sorted(seen)
    async with auth.http.get(
        REVOKED_SESSIONS_PATH, params={"cursor": "bm90IG91cnM"}, headers=headers
    ) as reply:
        assert reply.status == 400


# -- the gateway ---------------------------------------------------------------------------


@dataclass
class Gate:
    """A real gateway whose ``payments`` upstream answers 200 to anything (it checks no
    token): a 401 can only be the gateway's."""

    gateway: Gateway
    upstream_hits: list[str]
    name: str = "gateway"

    async def status(self, token: str) -> int:
        url = f"http://127.0.0.1:{self.gateway.port}/api/v1/payments/wallet"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            return response.status


@pytest.fixture
async def start_door(
    auth: AuthClient, settings_overrides: dict[str, Any], start_app: Any, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    """``await start_door()``: a started gateway, once its feed has read auth's list."""
    hits: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ok": True})

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", anything)
    upstream_url = (await start_app(upstream)).url
    started: list[Gateway] = []

    async def start() -> Gate:
        settings = gateway_settings(
            settings_overrides, auth, tmp_path, payments_upstreams=[upstream_url]
        )
        gateway = create_gateway(settings)
        await gateway.start()
        started.append(gateway)
        await gateway.revocations_read(timeout=10)
        return Gate(gateway, hits)

    yield start
    for gateway in started:
        await gateway.stop(grace=0.5)


async def test_logout_all_reaches_the_gateway_within_2_s_even_for_cached_tokens(
    auth: AuthClient, start_door: Callable[[], Any]
) -> None:
    door = await start_door()
    pair = await auth.signed_up("door-cached@example.com")
    token = pair["access_token"]
    for _ in range(2):  # verified once, then answered from the verified-token cache
        assert await door.status(token) == 200
    assert door.gateway.tokens.hits >= 1

    ended = await auth.post("/logout-all", token=token)
    assert ended.status == 204
    await refused_within([door], token, 2.0)
    forwarded = len(door.upstream_hits)
    assert await door.status(token) == 401
    assert len(door.upstream_hits) == forwarded  # refused at the door, never forwarded

    # A new sign-in is a new session: the gateway lets it through.
    again = await auth.login("door-cached@example.com")
    assert await door.status(again.body["access_token"]) == 200


async def test_a_password_reset_ends_a_session_at_the_gateway_within_2_s(
    auth: AuthClient, start_door: Callable[[], Any]
) -> None:
    door = await start_door()
    pair = await auth.signed_up("door-reset@example.com")
    token = pair["access_token"]
    assert await door.status(token) == 200
    asked = await auth.post("/password/forgot", {"email": "door-reset@example.com"})
    assert asked.status == 202, asked.body
    code = await auth.events.code_for("door-reset@example.com", "reset_password")
    reset = await auth.post(
        "/password/reset",
        {"email": "door-reset@example.com", "code": code, "new_password": "amber-lantern-93-quay"},
    )
    assert reset.status == 204, reset.body
    await refused_within([door], token, 2.0)


async def test_a_gateway_started_after_the_revocation_is_not_blind(
    auth: AuthClient, start_door: Callable[[], Any]
) -> None:
    pair = await auth.signed_up("door-restarted@example.com")
    token = pair["access_token"]
    assert (await auth.post("/logout-all", token=token)).status == 204
    door = await start_door()  # reads auth's list at start-up
    assert await door.status(token) == 401
    assert door.upstream_hits == []

"""Revoked sessions at the gateway with several worker processes (issue 12 item 1): every
worker reads auth's list at start-up and hears each ``auth.session.revoked`` on its own
queue, so whichever worker a connection lands on refuses the session's tokens.

(Through real auth, logout-all and password reset: auth's ``test_revocation.py``.)"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from switchyard.envelope import new_envelope
from switchyard.events.auth import SessionRevoked
from switchyard.problems import problem_type
from switchyard.revocation import REVOKED_SESSIONS_PATH
from switchyard.testing import Stopwatch, TcpProxy, service_bus
from switchyard.testing.servers import free_port

from .conftest import AUDIENCE, ISSUER, Keys, Upstream, route_table

REFUSE_WITHIN = 2.0  # issue 12
POLL_DEADLINE = 30.0  # how long to poll at all: a revocation never heard fails


async def statuses(url: str, token: str, count: int) -> tuple[list[int], set[str]]:
    """``count`` requests, a new connection each (the kernel spreads them over the workers):
    their statuses, and the workers that answered (the request id's per-worker prefix)."""
    seen: list[int] = []
    workers: set[str] = set()
    for _ in range(count):
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            seen.append(response.status)
            workers.add(response.headers["X-Request-ID"][:16])
    return seen, workers


async def announce_revoked(bus_settings: dict[str, Any], session_id: str) -> None:
    """Publish ``auth.session.revoked`` for ``session_id`` (as auth would; not listed)."""
    publisher = service_bus({**bus_settings, "bus_retry_delays": [0.2]}, "auth")
    await publisher.connect()
    try:
        now = datetime.now(UTC)
        await publisher.publish(
            new_envelope(
                SessionRevoked(
                    user_id="u1",
                    session_id=session_id,
                    expires_at=now + timedelta(minutes=15),
                    revoked_at=now,
                    reason="logout_all",
                ),
                service="auth",
                subject="u1",
            )
        )
    finally:
        await publisher.close()


async def test_every_worker_refuses_a_revoked_session(
    upstream: Upstream, keys: Keys, gateway_process: Any, bus_settings: dict[str, Any]
) -> None:
    keys.revoke("ended-before-start", time.time() + 600)
    process = gateway_process(
        route_table(upstream.url),
        {
            "GATEWAY_WORKERS": "2",
            "JWKS_URL": keys.jwks_url,
            "AUTH_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
        },
    )
    await process.wait_ready()
    url = process.url + "/api/v1/chat/c"
    live = keys.token("u1", claims={"sid": "live-session"})
    ended = keys.token("u1", claims={"sid": "ended-before-start"})

    # A worker takes tokens once it has read auth's list (503 until then, a moment).
    deadline = time.monotonic() + 15
    while (accepted := await statuses(url, live, 20))[0] != [200] * 20:
        assert set(accepted[0]) <= {200, 503}, accepted
        assert time.monotonic() < deadline, "a worker never read the revoked sessions"
    assert len(accepted[1]) == 2  # both workers are up, their queues bound
    refused, _ = await statuses(url, ended, 10)  # auth's list, read at start-up
    assert refused == [401] * 10

    # The workers connect to the broker in the background: a first revocation, announced
    # only on the bus, shows both queues are bound (the timed one follows).
    probe = keys.token("u1", claims={"sid": "probe-session"})
    await announce_revoked(bus_settings, "probe-session")
    deadline = time.monotonic() + 15
    while (await statuses(url, probe, 10))[0] != [401] * 10:
        assert time.monotonic() < deadline, "a worker never heard the bus"
    await announce_revoked(bus_settings, "live-session")
    clock = Stopwatch()
    while (await statuses(url, live, 1))[0] != [401]:
        assert clock.elapsed < POLL_DEADLINE, "still accepted"
    # The gateway's workers, the broker and this test share two cores with other test
    # workers: the bound is checked on the time the CPUs were free.
    assert clock.within(REFUSE_WITHIN), clock.report()
    forwarded = upstream.count("/api/v1/chat/c")
    after, workers = await statuses(url, live, 20)
    assert after == [401] * 20
    assert len(workers) == 2  # refused by both workers
    assert upstream.count("/api/v1/chat/c") == forwarded  # and never forwarded


async def test_a_gateway_blind_to_revocations_is_not_ready(
    make_gateway: Any, upstream: Upstream, keys: Keys
) -> None:
    """A (re)started gateway that could not read auth's list of revoked sessions yet would
    accept their tokens: /readyz says so (503, ``revocations: failing``), so a load balancer
    sends it no traffic until it has read the list; one that has read it is ready."""
    from .conftest import dead_url

    blind = await make_gateway(route_table(upstream.url), revoked_sessions_url=dead_url())
    seeing = await make_gateway(route_table(upstream.url))
    async with aiohttp.ClientSession() as session:
        async with session.get(blind.admin_url + "/readyz") as response:
            assert response.status == 503
            body = await response.json(content_type=None)
        assert body["checks"] == {"jwks": "ok", "revocations": "failing"}
        deadline = time.monotonic() + 10
        while True:
            async with session.get(seeing.admin_url + "/readyz") as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    break
            assert time.monotonic() < deadline, body
        assert body["checks"] == {"jwks": "ok", "revocations": "ok"}


async def test_a_worker_takes_no_token_before_it_has_read_the_revoked_sessions(
    make_gateway: Any, upstream: Upstream, keys: Keys
) -> None:
    """Whichever worker a connection lands on must not accept a token of a session revoked
    before it started: until its first read of auth's list, a bearer token gets 503
    ``revocations-unknown`` (Retry-After), while public routes serve; then the list counts."""
    keys.revoke("ended-before-start", time.time() + 600)
    proxy = await TcpProxy("127.0.0.1", keys.port).start()
    await proxy.cut()  # auth's list unreachable
    gateway = await make_gateway(
        route_table(upstream.url),
        revoked_sessions_url=f"http://127.0.0.1:{proxy.port}{REVOKED_SESSIONS_PATH}",
    )
    live = {"Authorization": "Bearer " + keys.token("u1", claims={"sid": "live-session"})}
    ended = {"Authorization": "Bearer " + keys.token("u1", claims={"sid": "ended-before-start"})}
    try:
        async with aiohttp.ClientSession() as session:
            for headers in (live, ended):
                async with session.get(gateway.url + "/api/v1/chat/c", headers=headers) as response:
                    assert response.status == 503
                    assert response.headers["Retry-After"] == "1"
                    assert response.content_type == "application/problem+json"
                    body = await response.json(content_type=None)
                    assert body["type"] == problem_type("revocations-unknown")
            async with session.get(gateway.url + "/small/x") as response:
                assert response.status == 200  # a public route serves without a token
            assert upstream.count("/api/v1/chat/c") == 0

            await proxy.restore()
            await gateway.revocations_read()
            async with session.get(gateway.url + "/api/v1/chat/c", headers=live) as response:
                assert response.status == 200
            async with session.get(gateway.url + "/api/v1/chat/c", headers=ended) as response:
                assert response.status == 401
            assert upstream.count("/api/v1/chat/c") == 1
    finally:
        await proxy.close()


async def test_a_gateway_starts_and_follows_revocations_while_the_broker_is_down(
    make_gateway: Any, upstream: Upstream, keys: Keys
) -> None:
    """The broker only feeds revocations: with it down the gateway still starts and serves,
    public routes at once, tokens once auth's list was read over HTTP, and a revocation
    listed afterwards is refused through polling (every 2 s) until the broker is back."""
    keys.revoke("ended-before-start", time.time() + 600)
    gateway = await make_gateway(
        route_table(upstream.url), amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    )
    live = {"Authorization": "Bearer " + keys.token("u1", claims={"sid": "live-session"})}
    ended = {"Authorization": "Bearer " + keys.token("u1", claims={"sid": "ended-before-start"})}
    url = gateway.url + "/api/v1/chat/c"
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/small/x") as response:
            assert response.status == 200
        await gateway.revocations_read(queue=False)
        async with session.get(url, headers=live) as response:
            assert response.status == 200
        async with session.get(url, headers=ended) as response:
            assert response.status == 401
        keys.revoke("live-session", time.time() + 600)
        deadline = time.monotonic() + 15
        while True:
            async with session.get(url, headers=live) as response:
                if response.status == 401:
                    break
                assert response.status == 200
            assert time.monotonic() < deadline, "the revocation was never polled"
            await asyncio.sleep(0.2)

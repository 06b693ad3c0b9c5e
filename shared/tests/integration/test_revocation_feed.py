"""The revocation feed on the real broker: auth's list at start-up, every announcement after,
one queue per process (every replica hears every revocation), poison parked with a reason."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp
import aiormq
import pytest

from switchyard.authn import verifier_context
from switchyard.bus import Bus, bus_context
from switchyard.bus.headers import H_ORIGINAL_EXCHANGE, H_ORIGINAL_ROUTING_KEY, H_REASON
from switchyard.envelope import new_envelope
from switchyard.events.auth import SessionRevoked
from switchyard.revocation import (
    DENY_LIST,
    REVOCATION_FEED,
    REVOKED_EVENT,
    DenyList,
    RevocationFeed,
    revocation_context,
    revoked_sessions_url,
)
from switchyard.settings import ServiceSettings
from switchyard.testing import JwksServer, Stopwatch, TcpProxy, eventually, service_bus
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.web import new_app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


@pytest.fixture
async def buses(settings_overrides: dict[str, Any]) -> AsyncIterator[list[Bus]]:
    """Two replicas of one service, each with its own connection."""
    made = [service_bus(settings_overrides, "payments") for _ in range(2)]
    for bus in made:
        await bus.connect()
    yield made
    for bus in made:
        await bus.close()


async def start_feed(
    bus: Bus, keys: JwksServer, token: str = TEST_INTERNAL_TOKEN
) -> RevocationFeed:
    feed = RevocationFeed(
        bus, DenyList(), url=revoked_sessions_url(keys.jwks_url), token=token, fetch_retry_max=0.2
    )
    await feed.start()
    return feed


async def until(condition: Callable[[], bool]) -> None:
    async def holds() -> bool:
        return condition()

    await eventually(holds, timeout=10)


def revoked(session_id: str, minutes: float = 15) -> Any:
    now = datetime.now(UTC)
    return new_envelope(
        SessionRevoked(
            user_id="u1",
            session_id=session_id,
            expires_at=now + timedelta(minutes=minutes),
            revoked_at=now,
            reason="logout_all",
        ),
        service="auth",
        subject="u1",
    )


async def test_start_up_reads_auths_list_and_every_replica_hears_each_revocation(
    buses: list[Bus], jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> None:
    jwks_server.revoke("before-start", time.time() + 600)
    feeds = [await start_feed(bus, jwks_server) for bus in buses]
    try:
        for feed in feeds:
            await until(feed.fetched.is_set)
            assert "before-start" in feed.deny_list
        publisher = service_bus(settings_overrides, "auth")
        await publisher.connect()
        try:
            clock = Stopwatch()
            await publisher.publish(revoked("announced"))
            await until(lambda: all("announced" in feed.deny_list for feed in feeds))
            # Within 2 s of the time the CPUs were free: the broker and this process share
            # two cores with other test workers (``until`` polls for 10 s at most).
            assert clock.within(2.0), clock.report()
            # An announcement of a session whose tokens are all dead adds nothing.
            await publisher.publish(revoked("long-gone", minutes=-10))
            await publisher.publish(revoked("marker"))
            await until(lambda: all("marker" in feed.deny_list for feed in feeds))
            assert all("long-gone" not in feed.deny_list for feed in feeds)
        finally:
            await publisher.close()
    finally:
        for feed in feeds:
            await feed.stop()


async def test_a_wrong_token_is_refused_and_the_read_retried(
    buses: list[Bus], jwks_server: JwksServer
) -> None:
    feed = await start_feed(buses[0], jwks_server, token="not-the-token")
    try:
        await until(lambda: jwks_server.revoked_reads == 0 and not feed.fetched.is_set())
        assert feed.fetches == 0
        feed.token = TEST_INTERNAL_TOKEN  # the next retry presents the right one
        await until(feed.fetched.is_set)
        assert jwks_server.revoked_reads >= 1
    finally:
        await feed.stop()


async def test_poison_is_parked_with_a_reason_and_the_feed_goes_on(
    buses: list[Bus], jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> None:
    feed = await start_feed(buses[0], jwks_server)
    connection = await aio_pika.connect(settings_overrides["amqp_url"])
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings_overrides["bus_exchange"])
        await exchange.publish(aio_pika.Message(b"{not json"), routing_key=REVOKED_EVENT)
        publisher = service_bus(settings_overrides, "auth")
        await publisher.connect()
        try:
            await publisher.publish(revoked("after-poison"))
        finally:
            await publisher.close()
        await until(lambda: "after-poison" in feed.deny_list)
        dlq = await channel.get_queue(feed.dlq_name, ensure=True)
        message = await dlq.get(timeout=5, fail=True)
        assert message is not None and message.body == b"{not json"
        assert message.headers[H_REASON] == "poison"
        # replayable after this process (and its queue) is gone: through the exchange
        assert message.headers[H_ORIGINAL_EXCHANGE] == settings_overrides["bus_exchange"]
        assert message.headers[H_ORIGINAL_ROUTING_KEY] == REVOKED_EVENT
        await message.ack()
        counted = buses[0].metrics.value
        revocations = buses[0].queue_name("revocations")
        assert counted("events_consumed_total", queue=revocations, outcome="dead") == 1
        assert counted("events_consumed_total", queue=revocations, outcome="ok") >= 1
    finally:
        await connection.close()
        await feed.stop()


async def test_the_queue_is_the_processs_own_and_goes_with_it(
    buses: list[Bus], jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> None:
    feed = await start_feed(buses[0], jwks_server)
    name = feed.queue_name
    connection = await aio_pika.connect(settings_overrides["amqp_url"])
    try:
        channel = await connection.channel()
        # Exclusive: no other connection may use (or even passively declare) it.
        with pytest.raises(aiormq.exceptions.ChannelLockedResource):
            await channel.declare_queue(name, passive=True)
    finally:
        await connection.close()
    await feed.stop()
    await buses[0].close()  # the connection goes: so does the queue
    connection = await aio_pika.connect(settings_overrides["amqp_url"])
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(name, passive=True)
    finally:
        await connection.close()


async def test_after_a_broker_outage_the_list_is_read_again(
    jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> None:
    """A revocation announced while this process's connection was down reached no queue of
    its: the feed reads auth's list again once the connection is back."""
    broker_port = int(settings_overrides["amqp_url"].rsplit(":", 1)[1].strip("/"))
    proxy = await TcpProxy("127.0.0.1", broker_port).start()
    bus = service_bus(
        settings_overrides, "payments", url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    )
    await bus.connect()
    feed = await start_feed(bus, jwks_server)
    try:
        await until(feed.fetched.is_set)
        reads = jwks_server.revoked_reads
        await proxy.cut()
        # Revoked while we were away (no queue of ours existed to hear it); auth lists it.
        jwks_server.revoke("while-away", time.time() + 600)
        assert "while-away" not in feed.deny_list
        await proxy.restore()
        await until(lambda: "while-away" in feed.deny_list)
        assert jwks_server.revoked_reads > reads
        # And the queue is back: new announcements arrive again.
        publisher = service_bus(settings_overrides, "auth")
        await publisher.connect()
        try:
            await publisher.publish(revoked("after-outage"))
        finally:
            await publisher.close()
        await until(lambda: "after-outage" in feed.deny_list)
    finally:
        await feed.stop()
        await bus.close()
        await proxy.close()


@asynccontextmanager
async def feed_behind_a_proxy(
    jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> AsyncIterator[tuple[RevocationFeed, TcpProxy]]:
    """A started feed reading ``jwks_server``'s list every 0.2 s, its broker connection
    through a proxy the test can cut."""
    broker_port = int(settings_overrides["amqp_url"].rsplit(":", 1)[1].strip("/"))
    proxy = await TcpProxy("127.0.0.1", broker_port).start()
    bus = service_bus(
        settings_overrides, "payments", url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    )
    await bus.connect()
    feed = RevocationFeed(
        bus,
        DenyList(),
        url=revoked_sessions_url(jwks_server.jwks_url),
        token=TEST_INTERNAL_TOKEN,
        fetch_retry_max=0.2,
        poll_interval=0.2,
    )
    await feed.start()
    try:
        yield feed, proxy
    finally:
        await feed.stop()
        await bus.close()
        await proxy.close()


async def test_while_the_broker_is_unreachable_auths_list_is_polled(
    jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> None:
    """No queue hears announcements while the connection is down, however long the outage:
    the feed reads auth's list every ``poll_interval`` meanwhile, so a session revoked during
    a broker outage is refused within seconds, not only once the broker is back."""
    async with feed_behind_a_proxy(jwks_server, settings_overrides) as (feed, proxy):
        await until(feed.fetched.is_set)
        await proxy.cut()
        jwks_server.revoke("during-outage", time.time() + 600)
        await until(lambda: "during-outage" in feed.deny_list)
        assert feed._connection is not None and not feed._connection.connected.is_set()
        await proxy.restore()


async def test_malformed_items_of_auths_list_are_skipped_and_polling_goes_on(
    jwks_server: JwksServer, settings_overrides: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed item of auth's list is skipped with a warning: the valid ones are denied,
    the start-up read completes and the polling during an outage keeps going."""
    jwks_server.malformed_revoked.extend(
        [
            "not an object",
            {"expires_at": "2030-01-01T00:00:00+00:00"},
            {"session_id": "bad-time", "expires_at": 12},
            {"session_id": "bad-text", "expires_at": "tomorrow"},
        ]
    )
    jwks_server.revoke("valid-before", time.time() + 600)
    async with feed_behind_a_proxy(jwks_server, settings_overrides) as (feed, proxy):
        await until(feed.fetched.is_set)
        assert "valid-before" in feed.deny_list and len(feed.deny_list) == 1
        skipped = [r for r in caplog.records if "malformed item" in r.getMessage()]
        assert len(skipped) >= 4
        await proxy.cut()
        for number in range(2):  # each read skips the same items and goes on
            jwks_server.revoke(f"during-outage-{number}", time.time() + 600)
            await until(lambda number=number: f"during-outage-{number}" in feed.deny_list)  # type: ignore[misc]
        assert feed._polling is not None and not feed._polling.done()
        await proxy.restore()


async def test_an_unexpected_failure_of_a_feed_task_is_logged(
    settings_overrides: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    feed = RevocationFeed(
        service_bus(settings_overrides, "payments"),
        DenyList(),
        url="http://127.0.0.1:9/",
        token=None,
    )

    async def broken() -> None:
        raise KeyError("a bug")

    task = feed._spawn(broken())
    await until(task.done)
    await until(lambda: not feed._tasks)
    failed = [r for r in caplog.records if r.getMessage() == "a revocation feed task failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert isinstance(failed[0].exc_info[1], KeyError)


async def test_a_service_is_not_ready_until_auths_list_has_been_read(
    start_app: Any, settings_overrides: dict[str, Any], jwks_server: JwksServer
) -> None:
    """Before the first read the process would accept tokens of sessions revoked before it
    started: /readyz says so (503, check ``revocations``), and turns ready once read."""
    jwks_server.revoke("revoked-earlier", time.time() + 600)
    jwks_server.internal_token = "auth-refuses-for-now"  # the list answers 401 until reset
    settings = ServiceSettings(
        service_name="widgets", **{**settings_overrides, **jwks_server.auth_settings}
    )
    app = new_app(settings)
    app.cleanup_ctx.extend([bus_context, verifier_context(), revocation_context()])
    server = await start_app(app)
    async with aiohttp.ClientSession(server.url) as http:
        assert app[REVOCATION_FEED].fetches == 0 and jwks_server.revoked_reads == 0
        async with http.get("/readyz") as response:
            assert response.status == 503
            body = await response.json(content_type=None)
            assert body["checks"] == {"broker": "ok", "revocations": "failing"}
        jwks_server.internal_token = TEST_INTERNAL_TOKEN  # a retry now reads the list

        async def ready() -> bool:
            async with http.get("/readyz") as response:
                return response.status == 200

        await eventually(ready, timeout=10)
        assert "revoked-earlier" in app[DENY_LIST]
        async with http.get("/readyz") as response:
            assert (await response.json())["checks"] == {"broker": "ok", "revocations": "ok"}


async def test_readiness_does_not_flap_when_a_later_read_of_auths_list_fails(
    start_app: Any,
    settings_overrides: dict[str, Any],
    jwks_server: JwksServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once read, the entries stay: a later read (after a reconnection) that auth refuses
    leaves the process ready, however many times it is retried; a reconnection storm must
    not take every replica out of the gateway's rotation at once."""
    settings = ServiceSettings(
        service_name="widgets", **{**settings_overrides, **jwks_server.auth_settings}
    )
    app = new_app(settings)
    app.cleanup_ctx.extend([bus_context, verifier_context(), revocation_context()])
    server = await start_app(app)
    feed = app[REVOCATION_FEED]
    async with aiohttp.ClientSession(server.url) as http:

        async def ready() -> bool:
            async with http.get("/readyz") as response:
                return response.status == 200

        await eventually(ready, timeout=10)
        jwks_server.internal_token = "auth-refuses-now"
        for _ in range(3):  # three reconnections, each reading the list again
            feed.refetch()

        def refusals() -> int:
            return sum(
                "could not read the revoked sessions" in r.getMessage() for r in caplog.records
            )

        async def refused_twice() -> bool:
            return refusals() >= 2

        await eventually(refused_twice, timeout=10)
        assert not feed.fetched.is_set()  # the read is still being retried
        async with http.get("/readyz") as response:
            assert response.status == 200
            assert (await response.json())["checks"]["revocations"] == "ok"
        jwks_server.internal_token = TEST_INTERNAL_TOKEN

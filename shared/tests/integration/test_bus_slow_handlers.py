"""Slow handlers on the real RabbitMQ and the embedded store: a timeout is a failure, and a
handler slower than its inbox lease still runs once when its message is redelivered."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.bus.inbox import Inbox
from switchyard.dlq import DeadLetters
from switchyard.testing import TcpProxy, eventually

from ..support import make_bus, start_consumer, thing

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


async def test_a_handler_slower_than_its_lease_has_one_effect_despite_a_redelivery(
    settings_overrides, mongo_db
):
    """The first consumer's connection drops while its handler (3 s) outlasts the inbox
    lease (1 s); the broker redelivers the message to the second consumer. The first keeps
    its lease alive, so the second waits, sees the event done, and acks it as a duplicate."""
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    url = settings_overrides["amqp_url"].replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    first_bus = make_bus(settings_overrides, url=url, service="svc")
    second_bus = make_bus(settings_overrides, service="svc")
    await first_bus.connect()
    await second_bus.connect()
    effects: list[tuple[str, str]] = []

    def handler_of(who: str):
        async def handler(event) -> None:
            effects.append((who, "started"))
            await asyncio.sleep(3.0)
            effects.append((who, "done"))

        return handler

    first = await start_consumer(
        first_bus,
        "slow",
        ("test.thing.happened",),
        handler_of("first"),
        inbox=Inbox(mongo_db["inbox"], owner="first", lease_seconds=1.0),
    )
    envelope = thing("slow")
    await second_bus.publish(envelope)
    await eventually(lambda: _true(("first", "started") in effects))
    second = await start_consumer(
        second_bus,
        "slow",
        ("test.thing.happened",),
        handler_of("second"),
        inbox=Inbox(mongo_db["inbox"], owner="second", lease_seconds=1.0),
    )
    await proxy.cut()  # the broker takes the message back and hands it to the second consumer

    async def acked_as_duplicate() -> bool:
        return (
            second_bus.metrics.value(
                "events_consumed_total", queue=second.queue_name, outcome="duplicate"
            )
            == 1
        )

    await eventually(acked_as_duplicate, timeout=15)
    await asyncio.sleep(1.0)
    assert effects == [("first", "started"), ("first", "done")]  # one effect
    await second.stop()
    await first.stop(timeout=0)
    await proxy.close()
    await first_bus.close()
    await second_bus.close()


async def test_a_handler_past_its_timeout_is_cancelled_and_retried_then_parked(
    settings_overrides,
):
    bus = make_bus(settings_overrides, retry_delays=[0.2])
    bus.handler_timeout = 0.5
    await bus.connect()
    started: list[str] = []
    cancelled: list[str] = []

    async def stuck(event) -> None:
        started.append(event.id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(event.id)
            raise

    consumer = await start_consumer(bus, "stuck", ("test.thing.happened",), stuck)
    envelope = thing("stuck")
    await bus.publish(envelope)
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)

    async def parked() -> bool:
        return len(await tool.peek()) == 1

    await eventually(parked, timeout=15)
    [message] = await tool.peek()
    assert message.reason == "retries-exhausted"
    assert message.exception_type == "HandlerTimeout"
    assert "0.5" in (message.exception_message or "")
    assert started == [envelope.id, envelope.id] == cancelled  # each attempt was stopped
    await consumer.stop()
    await bus.close()


async def _true(value: bool) -> bool:
    return value

"""Retries and the DLQ on the real RabbitMQ, independent of the broker version.

RabbitMQ 3.13.3+ and 4.x drop an ``x-death`` header that a client republishes, and
4.x quorum queues drop a message past a default delivery limit of 20 unless a
dead-letter target is set. These tests run on the machine's broker (3.10) and
reproduce the 4.x behaviour where it matters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import aio_pika
import pytest

from switchyard.bus import Bus, Consumer, Subscription
from switchyard.dlq import DeadLetters
from switchyard.metrics import Metrics
from switchyard.testing import eventually

from ..support import (
    TEST_CATALOG,
    Recorder,
    make_bus,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


class Rabbit4Bus(Bus):
    """Publishes as a RabbitMQ 3.13.3+/4.x broker stores it: a client-set ``x-death``
    header is not kept (rabbitmq-server #10709, #11331)."""

    async def send_to_queue(
        self, queue: str, body: bytes, *, headers: Mapping[str, Any], properties: Mapping[str, Any]
    ) -> None:
        kept = {k: v for k, v in headers.items() if k != "x-death"}
        await super().send_to_queue(queue, body, headers=kept, properties=properties)


async def _holds(value: bool) -> bool:
    return value


async def parked(tool: DeadLetters, count: int) -> bool:
    return len(await tool.peek()) == count


async def test_an_always_failing_handler_reaches_the_dlq_when_the_broker_drops_x_death(
    settings_overrides,
):
    bus = Rabbit4Bus(
        url=settings_overrides["amqp_url"],
        exchange=settings_overrides["bus_exchange"],
        service="svc",
        metrics=Metrics("svc"),
        queue_prefix=settings_overrides["bus_queue_prefix"],
        retry_delays=[0.2, 0.3, 0.3],
        queue_expires_ms=settings_overrides["bus_queue_expires_ms"],
    )
    await bus.connect()
    recorder = Recorder(always_fail=True)
    consumer = await start_consumer(bus, "rabbit4", ("test.thing.happened",), recorder)
    envelope = thing("doomed")
    await bus.publish(envelope)
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)
    await eventually(lambda: parked(tool, 1), timeout=20)
    [message] = await tool.peek()
    assert message.message_id == envelope.id
    assert message.reason == "retries-exhausted"
    assert message.attempts == 4
    await asyncio.sleep(1.0)
    assert [e.attempt for e in recorder.events] == [1, 2, 3, 4]  # no tier ran twice
    await consumer.stop()
    await bus.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"x-death": [{"queue": "{queue}.retry.1", "count": "abc", "reason": "expired"}]},
        {"x-switchyard-attempt": "two"},
    ],
    ids=["x-death-count-not-a-number", "attempt-header-not-a-number"],
)
async def test_a_malformed_attempt_count_is_poison_not_a_requeue_loop(settings_overrides, headers):
    bus = make_bus(settings_overrides)
    await bus.connect()
    recorder = Recorder()
    consumer = await start_consumer(bus, "malformed", ("test.thing.happened",), recorder)
    text = json.dumps(headers).replace("{queue}", consumer.queue_name)
    envelope = thing("odd")
    await bus.send_to_queue(
        consumer.queue_name,
        envelope.to_json(),
        headers={**envelope.headers(), **json.loads(text)},
        properties={"message_id": envelope.id, "content_type": "application/cloudevents+json"},
    )
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)
    await eventually(lambda: parked(tool, 1), timeout=10)
    [message] = await tool.peek()
    assert message.reason == "poison"
    assert "not a non-negative integer" in (message.exception_message or "")
    assert recorder.events == []  # the handler never saw it

    def dead() -> float:  # counted after the ack, which follows the park
        return bus.metrics.value("events_consumed_total", queue=consumer.queue_name, outcome="dead")

    await eventually(lambda: _holds(dead() >= 1), timeout=20)
    await asyncio.sleep(1.5)  # room for a wrong second count
    assert dead() == 1
    await consumer.stop()
    await bus.close()


async def test_a_message_handed_out_past_the_delivery_limit_is_parked_not_looping(
    settings_overrides,
):
    """A message the consumer can never settle (here: its retry tier cannot be written)
    goes back to the broker each time; the queue's explicit delivery limit parks it."""
    bus = make_bus(settings_overrides)
    bus.queue_type = "quorum"  # the delivery limit is the quorum queue's
    bus.delivery_limit = 2
    await bus.connect()
    recorder = Recorder(always_fail=True)
    consumer = await start_consumer(bus, "unsettled", ("test.thing.happened",), recorder)

    async def broken_send(*args, **kwargs):
        raise RuntimeError("retry tier unwritable")

    bus.send_to_queue = broken_send
    envelope = thing("stuck")
    await bus.publish(envelope)
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)
    await eventually(lambda: parked(tool, 1), timeout=20)
    [message] = await tool.peek()
    assert message.message_id == envelope.id
    assert message.reason == "delivery-limit"
    assert message.original_queue == consumer.queue_name
    handled = len(recorder.events)
    assert handled == 3  # the first delivery and two redeliveries, then parked
    await asyncio.sleep(2.0)
    assert len(recorder.events) == handled
    await consumer.stop()
    await bus.close()


async def test_parked_messages_survive_more_listings_than_a_delivery_limit(
    settings_overrides, caplog
):
    """RabbitMQ 4.x gives a quorum DLQ declared without a limit a delivery limit of 20;
    here the DLQ exists with a limit of 2 (and the consumer accepts it as it is). Reading
    the DLQ must never count as a failed delivery."""
    caplog.set_level(logging.ERROR, logger="switchyard.bus.topology")
    bus = make_bus(settings_overrides)
    await bus.connect()
    queue = bus.queue_name("listed")
    connection = await aio_pika.connect(settings_overrides["amqp_url"])
    channel = await connection.channel()
    await channel.declare_queue(
        f"{queue}.dlq",
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 2, "x-expires": 60_000},
    )
    await connection.close()
    recorder = Recorder(always_fail=True)
    consumer = await start_consumer(bus, "listed", ("test.thing.happened",), recorder)
    assert any(getattr(r, "queue", None) == f"{queue}.dlq" for r in caplog.records)
    first, second = thing("a"), thing("b")
    await bus.publish(first)
    await bus.publish(second)
    tool = DeadLetters(settings_overrides["amqp_url"], queue)
    await eventually(lambda: parked(tool, 2), timeout=20)
    await consumer.stop()
    # The two copies go down the retry tiers independently, so on a busy machine either may
    # be parked first: the DLQ's own order is what every listing must keep.
    parked_order = [m.message_id for m in await tool.peek()]
    assert sorted(parked_order) == sorted([first.id, second.id])
    for _ in range(5):
        listed = await tool.peek()
        assert [m.message_id for m in listed] == parked_order  # nothing lost, order kept
    env = {**os.environ, "AMQP_URL": settings_overrides["amqp_url"]}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"
    for command in (["list", queue], ["show", queue, "--id", second.id]):
        for _ in range(2):
            done = await asyncio.to_thread(
                subprocess.run,
                ["switchyard-dlq", *command],
                capture_output=True,
                text=True,
                env=env,
            )
            assert done.returncode == 0, done.stderr
    assert [m.message_id for m in await tool.peek()] == parked_order
    assert await tool.purge(first.id) == 1
    assert [m.message_id for m in await tool.peek()] == [second.id]
    await bus.close()


async def test_a_queue_declared_by_an_earlier_version_is_used_as_it_is(settings_overrides, caplog):
    """Upgrades: RabbitMQ refuses to redeclare a queue with other arguments, so the consumer
    queue of an earlier version (no delivery limit, no dead-letter target) is used as it is
    and the log says how to migrate it."""
    caplog.set_level(logging.ERROR, logger="switchyard.bus.topology")
    bus = make_bus(settings_overrides)
    await bus.connect()
    queue = bus.queue_name("legacy")
    connection = await aio_pika.connect(settings_overrides["amqp_url"])
    channel = await connection.channel()
    await channel.declare_queue(
        queue, durable=True, arguments={"x-queue-type": "quorum", "x-expires": 60_000}
    )
    await connection.close()
    recorder = Recorder()
    consumer = await start_consumer(bus, "legacy", ("test.thing.happened",), recorder)
    [record] = [r for r in caplog.records if getattr(r, "queue", None) == queue]
    assert "earlier version" in record.getMessage()
    envelope = thing("still-flows")
    await bus.publish(envelope)
    await recorder.wait_for(1)
    assert recorder.events[0].id == envelope.id
    await consumer.stop()
    await bus.close()


async def test_a_queue_with_its_own_tiers_and_retry_later_skips_shorter_tiers(settings_overrides):
    """A subscription's own retry tiers replace the bus's; ``RetryLater(after=…)`` (a
    provider's Retry-After) takes the first tier waiting at least that long."""
    from switchyard.bus import RetryLater

    bus = make_bus(settings_overrides, retry_delays=[30.0])  # the bus's tiers: never used here
    await bus.connect()
    attempts: list[tuple[int, float]] = []
    done = asyncio.Event()

    async def handler(event):  # type: ignore[no-untyped-def]
        attempts.append((event.attempt, time.monotonic()))
        if len(attempts) == 1:
            raise RetryLater("provider said 429", after=0.9)
        done.set()

    consumer = Consumer(
        bus,
        Subscription("own_tiers", ("test.thing.happened",), handler, retry_delays=(0.1, 1.0, 2.0)),
        catalog=TEST_CATALOG,
    )
    await consumer.start()
    await bus.publish(thing("later"))
    await asyncio.wait_for(done.wait(), 10)
    (first, t1), (second, t2) = attempts
    assert first == 1
    assert second == 3  # tier 1 (0.1 s) skipped: tier 2 is the first waiting >= 0.9 s
    assert t2 - t1 >= 0.9
    await consumer.stop()
    await bus.close()

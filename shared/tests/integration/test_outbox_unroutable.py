"""Events published before any queue is bound for them: re-tried, then parked for the DLQ tool."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.dlq import DeadLetters
from switchyard.outbox import UNROUTABLE_COLLECTION, OutboxRelay, with_events
from switchyard.testing import eventually

from ..support import (
    Recorder,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


async def test_an_event_published_before_its_queue_exists_is_delivered_once_it_does(bus, mongo_db):
    relay = OutboxRelay(
        mongo_db,
        ["things"],
        bus,
        metrics=bus.metrics,
        poll_interval=0.1,
        unroutable_window=60.0,
        unroutable_retry_max=0.4,
    )
    early = thing("before-any-consumer")
    await mongo_db["things"].insert_one(with_events({"_id": "early"}, [early]))
    relay.start()

    async def returned_twice() -> bool:
        kept = await mongo_db[UNROUTABLE_COLLECTION].find_one({"_id": early.id})
        return kept is not None and kept.get("attempts", 0) >= 2

    await eventually(returned_twice, timeout=15)
    recorder = Recorder()
    consumer = await start_consumer(bus, "late", ("test.thing.happened",), recorder)
    await recorder.wait_for(1, timeout=15)
    assert [e.id for e in recorder.events] == [early.id]

    async def settled() -> bool:
        return await mongo_db[UNROUTABLE_COLLECTION].count_documents({}) == 0

    await eventually(settled)
    await asyncio.sleep(1.0)
    assert len(recorder.events) == 1
    await relay.stop()
    await consumer.stop()


async def test_past_the_window_it_is_parked_where_the_dlq_tool_lists_and_replays_it(
    bus, mongo_db, settings_overrides
):
    relay = OutboxRelay(
        mongo_db,
        ["things"],
        bus,
        metrics=bus.metrics,
        poll_interval=0.1,
        unroutable_window=1.0,
        unroutable_retry_max=0.2,
    )
    await relay.declare()
    lost = thing("nobody-came")
    await mongo_db["things"].insert_one(with_events({"_id": "lost"}, [lost]))
    relay.start()
    tool = DeadLetters(settings_overrides["amqp_url"], bus.queue_name("unroutable"))

    async def parked() -> bool:
        return [m.message_id for m in await tool.peek()] == [lost.id]

    await eventually(parked, timeout=15)
    assert await mongo_db[UNROUTABLE_COLLECTION].count_documents({}) == 0
    [message] = await tool.peek()
    assert message.reason == "unroutable"
    assert message.original_routing_key == "test.thing.happened"
    assert message.event_type == "test.thing.happened"
    await relay.stop()

    assert await tool.replay(lost.id) == 0  # still nobody bound: it stays parked
    assert [m.message_id for m in await tool.peek()] == [lost.id]
    recorder = Recorder()
    consumer = await start_consumer(bus, "finally", ("test.thing.happened",), recorder)
    assert await tool.replay(lost.id) == 1
    await recorder.wait_for(1)
    assert [e.id for e in recorder.events] == [lost.id]
    assert await tool.peek() == []
    await consumer.stop()

"""The bus on the real RabbitMQ: envelopes, retries, DLQ, poison, de-duplication, reconnects."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid

import aio_pika
import pytest
from opentelemetry import trace

from switchyard.bus import UnroutableEvent
from switchyard.bus.inbox import Inbox
from switchyard.dlq import DeadLetters
from switchyard.testing import eventually

from ..support import (
    Recorder,
    ThingHappened,
    make_bus,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


async def queue_depth(amqp_url: str, name: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(name, ensure=True)
        result = await queue.declare()  # passive redeclare refreshes the count
        return int(result.message_count or 0)
    finally:
        await connection.close()


async def test_envelope_and_headers_survive_the_trip(bus, settings_overrides):
    recorder = Recorder()
    consumer = await start_consumer(bus, "things", ("test.thing.*",), recorder)
    # A raw queue on the same exchange shows what travels on the wire.
    connection = await aio_pika.connect(settings_overrides["amqp_url"])
    channel = await connection.channel()
    raw = await channel.declare_queue(exclusive=True)
    await raw.bind(settings_overrides["bus_exchange"], "test.thing.happened")

    with trace.get_tracer("test").start_as_current_span("request") as span:
        envelope = thing("a", amount=7)
        await bus.publish(envelope)
        trace_id = format(span.get_span_context().trace_id, "032x")

    await recorder.wait_for(1)
    received = recorder.events[0]
    assert received.envelope == envelope
    assert received.data == ThingHappened(thing_id="a", amount=7)
    assert envelope.traceparent and trace_id in envelope.traceparent

    message = await raw.get(timeout=5)
    await message.ack()
    assert json.loads(message.body)["id"] == envelope.id
    headers = message.headers
    assert headers["cloudEvents_specversion"] == "1.0"
    assert headers["cloudEvents_id"] == envelope.id
    assert headers["cloudEvents_type"] == "test.thing.happened"
    assert headers["cloudEvents_source"] == "/switchyard/svc"
    assert headers["cloudEvents_dataschema"] == envelope.dataschema
    assert trace_id in headers["cloudEvents_traceparent"]
    assert trace_id in headers["traceparent"]  # W3C propagation by the aio-pika instrumentation
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == envelope.id
    await connection.close()
    await consumer.stop()


async def test_failing_twice_then_succeeding_is_delivered_three_times_with_delays(
    settings_overrides,
):
    bus = make_bus(settings_overrides, retry_delays=[0.3, 0.6, 0.9])
    await bus.connect()
    recorder = Recorder(fail_times=2)
    consumer = await start_consumer(bus, "flaky", ("test.thing.happened",), recorder)
    await bus.publish(thing())
    await recorder.wait_for(3)
    first, second, third = recorder.times
    assert second - first >= 0.3
    assert third - second >= 0.6
    assert [e.attempt for e in recorder.events] == [1, 2, 3]
    await asyncio.sleep(1.0)  # nothing more arrives: it was acked once
    assert len(recorder.events) == 3
    consumed = bus.metrics.events_consumed
    queue = consumer.queue_name
    assert consumed.labels("svc", queue, "ok")._value.get() == 1
    assert consumed.labels("svc", queue, "retry")._value.get() == 2
    assert await queue_depth(settings_overrides["amqp_url"], queue) == 0
    assert await queue_depth(settings_overrides["amqp_url"], f"{queue}.dlq") == 0
    await consumer.stop()
    await bus.close()


async def test_always_failing_ends_in_dlq_with_reasons_and_replay_succeeds_after_fix(
    bus, settings_overrides
):
    recorder = Recorder(always_fail=True)
    consumer = await start_consumer(bus, "broken", ("test.thing.happened",), recorder)
    envelope = thing("doomed")
    await bus.publish(envelope)
    tiers = len(settings_overrides["bus_retry_delays"])
    await recorder.wait_for(tiers + 1)
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)

    async def parked() -> bool:
        return len(await tool.peek()) == 1

    await eventually(parked)
    [message] = await tool.peek()
    assert message.message_id == envelope.id
    assert message.reason == "retries-exhausted"
    assert message.exception_type == "RuntimeError"
    assert "induced failure" in (message.exception_message or "")
    assert message.attempts == tiers + 1
    assert message.original_routing_key == "test.thing.happened"
    assert message.original_queue == consumer.queue_name
    assert (
        message.first_failure
        and message.last_failure
        and message.first_failure <= message.last_failure
    )
    assert len(await tool.peek()) == 1  # listing does not consume

    recorder.always_fail = False  # "the handler is fixed"
    assert await tool.replay(envelope.id) == 1
    await recorder.wait_for(tiers + 2)
    assert recorder.events[-1].id == envelope.id
    assert recorder.events[-1].attempt == 1  # attempts start over after a replay
    await eventually(lambda: _empty(tool))
    await consumer.stop()


async def _empty(tool: DeadLetters) -> bool:
    return not await tool.peek()


async def test_dlq_cli_lists_and_purges(bus, settings_overrides):
    recorder = Recorder(always_fail=True)
    consumer = await start_consumer(bus, "cli", ("test.thing.happened",), recorder)
    envelope = thing("cli")
    await bus.publish(envelope)
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)
    await eventually(lambda: _has(tool, 1))
    await consumer.stop()
    env = {**os.environ, "AMQP_URL": settings_overrides["amqp_url"]}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"
    listing = await asyncio.to_thread(
        subprocess.run,
        ["switchyard-dlq", "list", consumer.queue_name],
        capture_output=True,
        text=True,
        env=env,
    )
    assert listing.returncode == 0, listing.stderr
    assert envelope.id in listing.stdout and "retries-exhausted" in listing.stdout
    shown = await asyncio.to_thread(
        subprocess.run,
        ["switchyard-dlq", "show", consumer.queue_name, "--id", envelope.id],
        capture_output=True,
        text=True,
        env=env,
    )
    assert json.loads(shown.stdout)[0]["body"]["data"] == {"thing_id": "cli", "amount": 0}
    purged = await asyncio.to_thread(
        subprocess.run,
        ["switchyard-dlq", "purge", consumer.queue_name, "--all", "--yes"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert purged.returncode == 0 and "purged 1" in purged.stdout
    assert await tool.peek() == []


async def _has(tool: DeadLetters, count: int) -> bool:
    return len(await tool.peek()) == count


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x00not json at all", "not JSON"),
        (b'{"hello": "world"}', "not a valid CloudEvents envelope"),
        (None, "unknown event type"),
        (None, "data fails"),
        (None, "unknown version"),
    ],
    ids=["not-json", "not-envelope", "unknown-type", "bad-data", "unknown-version"],
)
async def test_poison_goes_straight_to_dlq_and_consumer_keeps_going(
    bus, settings_overrides, body, why
):
    recorder = Recorder()
    consumer = await start_consumer(bus, "poison", ("test.#",), recorder)
    good = thing("good")
    if body is None:
        doc = json.loads(good.to_json())
        doc["id"] = str(uuid.uuid4())
        if why == "unknown event type":
            doc["type"] = "test.thing.vanished"
            doc["dataschema"] = doc["dataschema"].replace("happened", "vanished")
        elif why == "data fails":
            doc["data"] = {"thing_id": 42, "extra": True}
        else:
            doc["dataschema"] = doc["dataschema"].replace("/v1.json", "/v9.json")
        body = json.dumps(doc).encode()
    await bus.exchange.publish(
        aio_pika.Message(body, message_id="poison-1"), routing_key="test.thing.happened"
    )
    await bus.publish(good)
    await recorder.wait_for(1)
    assert [e.id for e in recorder.events] == [good.id]
    tool = DeadLetters(settings_overrides["amqp_url"], consumer.queue_name)
    await eventually(lambda: _has(tool, 1))
    [parked] = await tool.peek()
    assert parked.reason == "poison"
    assert parked.attempts == 0
    assert why in (parked.exception_message or "")
    await consumer.stop()


async def test_same_event_id_twice_has_one_effect(bus, mongo_db):
    recorder = Recorder()
    inbox = Inbox(mongo_db["inbox"], owner="test")
    consumer = await start_consumer(bus, "dedupe", ("test.thing.happened",), recorder, inbox=inbox)
    envelope = thing("once")
    await bus.publish(envelope)
    await bus.publish(envelope)
    second = thing("after")
    await bus.publish(second)
    await recorder.wait_for(2)

    async def duplicate_counted() -> bool:  # the copy may still be in hand when "after" lands
        label = bus.metrics.events_consumed.labels("svc", consumer.queue_name, "duplicate")
        return label._value.get() >= 1

    await eventually(duplicate_counted, timeout=20)
    await asyncio.sleep(0.5)
    assert [e.id for e in recorder.events] == [envelope.id, second.id]
    assert (
        bus.metrics.events_consumed.labels("svc", consumer.queue_name, "duplicate")._value.get()
        == 1
    )
    await consumer.stop()


async def test_unroutable_event_is_counted_and_logged(bus, caplog):
    caplog.set_level(logging.ERROR, logger="switchyard.bus")
    envelope = thing("nobody-listens")
    with pytest.raises(UnroutableEvent):
        await bus.publish(envelope)
    assert bus.metrics.events_unroutable.labels("svc", "test.thing.happened")._value.get() == 1
    assert bus.metrics.events_published.labels("svc", "test.thing.happened")._value.get() == 0
    assert any(
        r.getMessage().startswith("unroutable event") and r.event_id == envelope.id
        for r in caplog.records
    )

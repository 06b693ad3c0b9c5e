"""One bus test suite, two backends: the in-memory bus and the real RabbitMQ."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from switchyard.bus import HandlerRegistry
from switchyard.bus.inbox import Inbox
from switchyard.dlq import DeadLetters
from switchyard.envelope import new_envelope
from switchyard.testing import InMemoryBus, eventually

from ..support import TEST_CATALOG, Recorder, ThingHappened, make_bus, start_consumer


class MemoryBackend:
    def __init__(self) -> None:
        self.bus = InMemoryBus(catalog=TEST_CATALOG, retry_tiers=2)

    async def subscribe(self, name, patterns, handler):
        registry = HandlerRegistry()
        registry.add(name, patterns, handler)
        self.bus.subscribe(registry)

    async def publish(self, envelope):
        await self.bus.publish(envelope)

    async def publish_raw(self, body, routing_key):
        await self.bus.deliver(body, routing_key=routing_key)

    async def dead_reasons(self, name):
        return [d.reason for d in self.bus.dead_letters if d.subscription == name]

    async def close(self):
        return None


class RabbitBackend:
    def __init__(self, overrides, mongo_db) -> None:
        self.overrides = overrides
        self.mongo_db = mongo_db
        self.bus = make_bus(overrides)
        self.consumers = []

    async def start(self):
        await self.bus.connect()
        return self

    async def subscribe(self, name, patterns, handler):
        inbox = Inbox(self.mongo_db["inbox"], owner="contract")
        self.consumers.append(
            await start_consumer(self.bus, name, tuple(patterns), handler, inbox=inbox)
        )

    async def publish(self, envelope):
        await self.bus.publish(envelope)

    async def publish_raw(self, body, routing_key):
        await self.bus.exchange.publish(aio_pika.Message(body), routing_key=routing_key)

    async def dead_reasons(self, name):
        tool = DeadLetters(self.overrides["amqp_url"], self.bus.queue_name(name))
        return [m.reason for m in await tool.peek()]

    async def close(self):
        for consumer in self.consumers:
            await consumer.stop()
        await self.bus.close()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
async def backend(request, settings_overrides, mongo_db, broker_cleanup):
    if request.param == "memory":
        backend = MemoryBackend()
    else:
        backend = await RabbitBackend(settings_overrides, mongo_db).start()
    yield backend
    await backend.close()


def thing(thing_id="x"):
    return new_envelope(ThingHappened(thing_id=thing_id), service="svc", catalog=TEST_CATALOG)


async def test_delivers_typed_event(backend):
    recorder = Recorder()
    await backend.subscribe("typed", ["test.thing.*"], recorder)
    envelope = thing("typed")
    await backend.publish(envelope)
    await recorder.wait_for(1)
    assert recorder.events[0].envelope == envelope
    assert recorder.events[0].data == ThingHappened(thing_id="typed")


async def test_pattern_that_does_not_match_gets_nothing(backend):
    recorder = Recorder()
    other = Recorder()
    await backend.subscribe("match", ["test.thing.happened"], recorder)
    await backend.subscribe("nomatch", ["test.other.*"], other)
    await backend.publish(thing())
    await recorder.wait_for(1)
    await asyncio.sleep(0.3)
    assert other.events == []


async def test_duplicate_id_handled_once(backend):
    recorder = Recorder()
    await backend.subscribe("dup", ["test.thing.happened"], recorder)
    envelope = thing("dup")
    await backend.publish(envelope)
    await backend.publish(envelope)
    await recorder.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(recorder.events) == 1


async def test_poison_is_dead_lettered(backend):
    recorder = Recorder()
    await backend.subscribe("poisoned", ["test.thing.happened"], recorder)
    await backend.publish_raw(b"not json", "test.thing.happened")

    async def dead() -> bool:
        return await backend.dead_reasons("poisoned") == ["poison"]

    await eventually(dead)
    assert recorder.events == []


async def test_transient_failure_is_retried_until_success(backend):
    recorder = Recorder(fail_times=2)
    await backend.subscribe("retried", ["test.thing.happened"], recorder)
    await backend.publish(thing())
    await recorder.wait_for(3)
    assert [e.attempt for e in recorder.events] == [1, 2, 3]
    assert await backend.dead_reasons("retried") == []

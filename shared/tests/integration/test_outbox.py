"""The outbox relay on the embedded store and the real broker."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from switchyard.bus.inbox import Inbox
from switchyard.envelope import utcnow
from switchyard.mongo import stored_time
from switchyard.outbox import (
    OUTBOX_FIELD,
    PENDING_FIELD,
    UNROUTABLE_COLLECTION,
    OutboxRelay,
    stage_events,
    with_events,
)
from switchyard.testing import TcpProxy, eventually

from ..support import (
    Recorder,
    make_bus,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


def relay_for(mongo_db, publisher, **kwargs) -> OutboxRelay:
    return OutboxRelay(
        mongo_db, ["things"], publisher, metrics=publisher.metrics, poll_interval=0.1, **kwargs
    )


async def pending(mongo_db) -> int:
    total = 0
    async for doc in mongo_db["things"].find({}, {PENDING_FIELD: 1, OUTBOX_FIELD: 1}):
        assert doc.get(PENDING_FIELD, 0) == len(doc.get(OUTBOX_FIELD) or {})
        total += doc.get(PENDING_FIELD, 0)
    return total


async def test_state_and_events_are_one_write(mongo_db):
    first, second = thing("a", 1), thing("a", 2)
    await mongo_db["things"].insert_one(with_events({"_id": "a", "amount": 1}, [first]))
    await mongo_db["things"].update_one(
        {"_id": "a"}, stage_events({"$set": {"amount": 2}}, [second])
    )
    doc = await mongo_db["things"].find_one({"_id": "a"})
    assert doc["amount"] == 2
    assert set(doc[OUTBOX_FIELD]) == {first.id, second.id}
    assert doc[PENDING_FIELD] == 2


async def test_killed_after_write_before_publish_publishes_once_after_restart(
    bus, settings_overrides, mongo_url, mongo_db
):
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("proc_writer.py")),
        json.dumps({"mongo_url": mongo_url, "db": mongo_db.name}),
        stdout=asyncio.subprocess.PIPE,
    )
    event_id = (await writer.stdout.readline()).decode().strip()
    assert await writer.wait() == -9  # died by SIGKILL right after the write
    assert await pending(mongo_db) == 1

    recorder = Recorder()
    consumer = await start_consumer(bus, "after_crash", ("test.thing.happened",), recorder)
    relay = relay_for(mongo_db, bus)  # "after restart"
    relay.start()
    await recorder.wait_for(1)
    await eventually(lambda: _zero(mongo_db))
    await asyncio.sleep(0.5)
    assert [e.id for e in recorder.events] == [event_id]
    assert (await mongo_db["things"].find_one({"_id": "crash"}))["amount"] == 5
    await relay.stop()
    await consumer.stop()


async def _zero(mongo_db) -> bool:
    return await pending(mongo_db) == 0


async def test_relay_waits_while_broker_is_down_then_catches_up(settings_overrides, mongo_db):
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    url = settings_overrides["amqp_url"].replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    relay_bus = make_bus(settings_overrides, url=url)
    relay_bus.publish_timeout = 1.0
    await relay_bus.connect()
    listener = make_bus(settings_overrides, service="sub")
    await listener.connect()
    recorder = Recorder()
    consumer = await start_consumer(listener, "catch_up", ("test.thing.happened",), recorder)
    relay = relay_for(mongo_db, relay_bus)
    relay.start()

    await proxy.cut()
    events = [thing(f"d{n}", n) for n in range(5)]
    for n, envelope in enumerate(events):
        await mongo_db["things"].insert_one(with_events({"_id": f"d{n}", "amount": n}, [envelope]))
    relay.notify()
    await asyncio.sleep(2.5)
    assert recorder.events == []
    assert await pending(mongo_db) == 5  # kept, not dropped

    await proxy.restore()
    await recorder.wait_for(5, timeout=30)
    await eventually(lambda: _zero(mongo_db), timeout=10)
    assert sorted(e.id for e in recorder.events) == sorted(e.id for e in events)
    await relay.stop()
    await consumer.stop()
    await listener.close()
    await relay_bus.close()
    await proxy.close()


async def test_crash_between_publish_and_mark_is_deduplicated_by_the_inbox(bus, mongo_db):
    recorder = Recorder()
    inbox = Inbox(mongo_db["inbox"], owner="t")
    consumer = await start_consumer(bus, "twice", ("test.thing.happened",), recorder, inbox=inbox)
    envelope = thing("m")
    await mongo_db["things"].insert_one(with_events({"_id": "m"}, [envelope]))
    await bus.publish(envelope)  # the relay got this far, then "crashed" before marking it sent
    relay = relay_for(mongo_db, bus)
    assert await relay.relay_once() == 1  # after restart it is published again …
    await recorder.wait_for(1)
    await asyncio.sleep(0.5)
    assert [e.id for e in recorder.events] == [envelope.id]  # … and handled once
    assert await pending(mongo_db) == 0
    await consumer.stop()


async def test_unroutable_event_is_kept_aside_not_dropped(bus, mongo_db):
    envelope = thing("lonely")  # no queue is bound in this namespace
    await mongo_db["things"].insert_one(with_events({"_id": "lonely"}, [envelope]))
    relay = relay_for(mongo_db, bus)
    await relay.relay_once()
    assert await pending(mongo_db) == 0
    kept = await mongo_db[UNROUTABLE_COLLECTION].find_one({"_id": envelope.id})
    assert kept["envelope"]["type"] == "test.thing.happened"
    assert bus.metrics.events_unroutable.labels("svc", "test.thing.happened")._value.get() == 1


async def test_two_relays_publish_each_event_once(settings_overrides, mongo_db):
    buses = [make_bus(settings_overrides) for _ in range(2)]
    for b in buses:
        await b.connect()
    listener = make_bus(settings_overrides, service="sub")
    await listener.connect()
    recorder = Recorder()
    consumer = await start_consumer(listener, "pair", ("test.thing.happened",), recorder)
    relays = [relay_for(mongo_db, b) for b in buses]
    for relay in relays:
        relay.start()
    events = [thing(f"p{n}", n) for n in range(40)]
    for n, envelope in enumerate(events):
        await mongo_db["things"].insert_one(with_events({"_id": f"p{n}"}, [envelope]))
        relays[n % 2].notify()
    await recorder.wait_for(40, timeout=30)
    await eventually(lambda: _zero(mongo_db))
    await asyncio.sleep(0.5)
    assert len(recorder.events) == 40  # one relay held the lease; nothing published twice
    published = sum(
        b.metrics.events_published.labels("svc", "test.thing.happened")._value.get() for b in buses
    )
    assert published == 40
    for relay in relays:
        await relay.stop()
    await consumer.stop()
    await listener.close()
    for b in buses:
        await b.close()


async def test_pending_gauge_reports_count_and_age(bus, mongo_db):
    await mongo_db["things"].insert_one(with_events({"_id": "g"}, [thing("g1"), thing("g2")]))
    relay = relay_for(mongo_db, bus)
    await relay._update_gauges(every=0)
    assert bus.metrics.outbox_pending.labels("svc")._value.get() == 2
    assert bus.metrics.outbox_oldest_age.labels("svc")._value.get() >= 0


class StagingDuringPublish:
    """A publisher that, while publishing, lets a writer stage one more event on the document."""

    def __init__(self, bus, mongo_db) -> None:
        self.bus = bus
        self.metrics = bus.metrics
        self.mongo_db = mongo_db
        self.late: list = []

    async def publish(self, envelope) -> None:
        await self.bus.publish(envelope)
        if not self.late:
            late = thing("race", 99)
            self.late.append(late)
            await self.mongo_db["things"].update_one(
                {"_id": "race"}, stage_events({"$set": {"amount": 99}}, [late])
            )


async def test_event_staged_while_relaying_is_not_lost(bus, mongo_db):
    recorder = Recorder()
    consumer = await start_consumer(bus, "race", ("test.thing.happened",), recorder)
    first = thing("race", 1)
    await mongo_db["things"].insert_one(with_events({"_id": "race", "amount": 1}, [first]))
    publisher = StagingDuringPublish(bus, mongo_db)
    relay = relay_for(mongo_db, publisher)
    assert await relay.relay_once() == 1
    doc = await mongo_db["things"].find_one({"_id": "race"})
    assert set(doc[OUTBOX_FIELD]) == {publisher.late[0].id}  # the batched clear saw the new seq
    assert await relay.relay_once() == 1
    await recorder.wait_for(2)
    assert [e.id for e in recorder.events] == [first.id, publisher.late[0].id]
    assert await pending(mongo_db) == 0
    await consumer.stop()


async def test_gauges_follow_the_relay_passes(settings_overrides, mongo_db):
    proxy_bus = make_bus(settings_overrides)
    await proxy_bus.connect()
    listener = make_bus(settings_overrides, service="sub")
    await listener.connect()
    consumer = await start_consumer(listener, "gauges", ("test.thing.happened",), Recorder())
    await mongo_db["things"].insert_many(
        [with_events({"_id": f"q{n}"}, [thing(f"q{n}")]) for n in range(5)]
    )
    relay = OutboxRelay(mongo_db, ["things"], proxy_bus, metrics=proxy_bus.metrics, batch_size=2)
    await relay.relay_once()  # a full batch: the rest of the backlog is counted by the store
    await relay._update_gauges(every=0)
    assert proxy_bus.metrics.outbox_pending.labels("svc")._value.get() == 3
    assert proxy_bus.metrics.outbox_oldest_age.labels("svc")._value.get() > 0
    while await relay.relay_once():
        pass
    await relay._update_gauges(every=0)
    assert proxy_bus.metrics.outbox_pending.labels("svc")._value.get() == 0
    assert proxy_bus.metrics.outbox_oldest_age.labels("svc")._value.get() == 0
    await consumer.stop()
    await listener.close()
    await proxy_bus.close()


async def test_a_staged_event_that_cannot_be_read_is_set_aside_and_the_rest_flows(bus, mongo_db):
    recorder = Recorder()
    consumer = await start_consumer(bus, "mixed", ("test.thing.happened",), recorder)
    good = thing("good")
    await mongo_db["things"].insert_one(with_events({"_id": "good"}, [good]))
    await mongo_db["things"].insert_one(
        {
            "_id": "bad",
            OUTBOX_FIELD: {"e-bad": {"json": "{not json", "staged": stored_time(utcnow())}},
            PENDING_FIELD: 1,
            "outbox_seq": 1,
        }
    )
    relay = relay_for(mongo_db, bus)
    relay.start()
    await recorder.wait_for(1)
    await eventually(lambda: _zero(mongo_db))
    assert [e.id for e in recorder.events] == [good.id]
    kept = await mongo_db[UNROUTABLE_COLLECTION].find_one({"_id": "e-bad"})
    assert kept["reason"] == "invalid" and kept["staged"]["json"] == "{not json"
    assert relay._task is not None and not relay._task.done()  # the relay keeps running
    await relay.stop()
    await consumer.stop()


async def test_the_relay_reads_with_the_default_concern_on_a_standalone_store(
    bus, mongo_db, store_backend
):
    await mongo_db["things"].insert_one(with_events({"_id": "rc"}, [thing("rc")]))
    relay = relay_for(mongo_db, bus)
    await relay.relay_once()
    hello = await mongo_db.client.admin.command("hello")
    if store_backend == "embedded":
        assert "setName" not in hello and relay.read_concern is None
    else:  # a real MongoDB from testcontainers or MONGO_URL: whatever its topology says
        assert (relay.read_concern is not None) == bool(hello.get("setName"))
    assert await pending(mongo_db) == 0

"""The relay lease: renewed while a pass runs, and publishing stops the moment it is lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from switchyard.envelope import utcnow
from switchyard.mongo import stored_time
from switchyard.outbox import LEASES_COLLECTION, OutboxRelay, with_events
from switchyard.testing import eventually

from ..support import (
    Recorder,
    make_bus,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]
EVENTS = 5


class SlowConfirms:
    """A broker whose confirms take ``delay`` seconds (a pass then outlasts the lease)."""

    def __init__(self, bus, delay: float) -> None:
        self.bus = bus
        self.metrics = bus.metrics
        self.delay = delay
        self.published: list[str] = []

    async def publish(self, envelope) -> None:
        await asyncio.sleep(self.delay)
        await self.bus.publish(envelope)
        self.published.append(envelope.id)


async def stage(mongo_db) -> list:
    events = [thing(f"l{n}") for n in range(EVENTS)]
    await mongo_db["things"].insert_many(
        [with_events({"_id": f"l{n}"}, [e]) for n, e in enumerate(events)]
    )
    return events


async def pending_count(mongo_db) -> int:
    return await mongo_db["things"].count_documents({"outbox_pending": {"$gt": 0}})


async def test_a_pass_slower_than_the_lease_keeps_it(settings_overrides, mongo_db):
    buses = [make_bus(settings_overrides) for _ in range(2)]
    for b in buses:
        await b.connect()
    recorder = Recorder()
    consumer = await start_consumer(buses[1], "lease", ("test.thing.happened",), recorder)
    events = await stage(mongo_db)
    slow = SlowConfirms(buses[0], delay=2.5)
    first = OutboxRelay(mongo_db, ["things"], slow, metrics=buses[0].metrics, lease_seconds=1.0)
    second = OutboxRelay(
        mongo_db,
        ["things"],
        buses[1],
        metrics=buses[1].metrics,
        lease_seconds=1.0,
        poll_interval=0.1,
    )
    passing = asyncio.create_task(first.relay_once())
    await asyncio.sleep(0.3)
    second.start()  # polls every 0.1 s for 2+ s while the first pass waits on its confirms
    assert await passing == EVENTS
    await recorder.wait_for(EVENTS)
    await asyncio.sleep(0.5)
    assert sorted(e.id for e in recorder.events) == sorted(e.id for e in events)  # once each
    assert buses[1].metrics.value("events_published_total", type="test.thing.happened") == 0
    assert await pending_count(mongo_db) == 0
    await second.stop()
    await first.stop()
    await consumer.stop()
    for b in buses:
        await b.close()


async def test_a_relay_that_lost_its_lease_stops_publishing(settings_overrides, mongo_db):
    bus = make_bus(settings_overrides)
    await bus.connect()
    await stage(mongo_db)
    slow = SlowConfirms(bus, delay=2.0)
    relay = OutboxRelay(mongo_db, ["things"], slow, metrics=bus.metrics, lease_seconds=1.5)
    passing = asyncio.create_task(relay.relay_once())

    async def leased() -> bool:
        return await mongo_db[LEASES_COLLECTION].find_one({"_id": "svc"}) is not None

    await eventually(leased)
    # Another replica takes the lease over (as after a store partition that outlasted it).
    await mongo_db[LEASES_COLLECTION].update_one(
        {"_id": "svc"},
        {
            "$set": {
                "owner": "another-replica",
                "until": stored_time(utcnow() + timedelta(minutes=1)),
            },
            "$inc": {"fence": 1},
        },
    )
    assert await passing == 0
    assert slow.published == []  # nothing went out after the lease was gone
    assert await pending_count(mongo_db) == EVENTS  # all still waiting for the new holder
    assert await relay.relay_once() == 0  # and this relay stays out while the other holds it
    await relay.stop()
    await bus.close()

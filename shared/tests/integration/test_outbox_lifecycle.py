"""Outbox documents that are deleted, re-created or expire while events wait in them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from switchyard.bus import PublishFailed
from switchyard.mongo import Index, ensure_indexes, stored_time, ttl_index
from switchyard.mongo.client import asc
from switchyard.outbox import (
    OUTBOX_FIELD,
    PENDING_FIELD,
    Expiry,
    OutboxRelay,
    delete_documents,
    refuse_ttl_indexes,
    stage_events,
)
from switchyard.testing import eventually

from ..support import (
    Recorder,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


async def issue_code(mongo_db, key: str, event, *, expires_at: datetime | None = None) -> None:
    """The otp_codes write: an upsert keyed ``user:purpose`` that stages the code's event."""
    expires_at = expires_at or datetime.now(UTC) + timedelta(minutes=10)
    await mongo_db["codes"].update_one(
        {"_id": key},
        stage_events(
            {"$set": {"code": {"expires": stored_time(expires_at)}, "attempts": 0}}, [event]
        ),
        upsert=True,
    )


class ConsumedAndReissuedWhilePublishing:
    """While the relay publishes the first code's event, the code is used (deleted) and a
    new one is issued under the same ``_id`` — the re-created document starts its
    ``outbox_seq`` at 1 again."""

    def __init__(self, bus, mongo_db, key: str) -> None:
        self.bus = bus
        self.metrics = bus.metrics
        self.mongo_db = mongo_db
        self.key = key
        self.reissued: list = []

    async def publish(self, envelope) -> None:
        await self.bus.publish(envelope)
        if not self.reissued:
            await self.mongo_db["codes"].delete_one({"_id": self.key})
            second = thing("code-2")
            self.reissued.append(second)
            await issue_code(self.mongo_db, self.key, second)


async def test_a_re_created_document_keeps_its_unpublished_event(bus, mongo_db):
    recorder = Recorder()
    consumer = await start_consumer(bus, "codes", ("test.thing.happened",), recorder)
    first = thing("code-1")
    await issue_code(mongo_db, "u1:verify_email", first)
    publisher = ConsumedAndReissuedWhilePublishing(bus, mongo_db, "u1:verify_email")
    relay = OutboxRelay(mongo_db, ["codes"], publisher, metrics=bus.metrics)
    assert await relay.relay_once() == 1
    [second] = publisher.reissued
    doc = await mongo_db["codes"].find_one({"_id": "u1:verify_email"})
    assert set(doc[OUTBOX_FIELD]) == {second.id}  # the clear did not reach the new document
    assert doc[PENDING_FIELD] == 1
    assert await relay.relay_once() == 1
    await recorder.wait_for(2)
    assert [e.id for e in recorder.events] == [first.id, second.id]  # the user gets the code
    await consumer.stop()


async def test_deleting_a_document_keeps_its_unrelayed_events(bus, mongo_db):
    recorder = Recorder()
    consumer = await start_consumer(bus, "deleted", ("test.thing.happened",), recorder)
    waiting, done = thing("waiting"), thing("already-sent")
    await issue_code(mongo_db, "u2:reset_password", waiting)
    await issue_code(mongo_db, "u3:reset_password", done)
    relay = OutboxRelay(mongo_db, ["codes"], bus, metrics=bus.metrics)
    await mongo_db["codes"].update_one(  # as if u3's event had been relayed already
        {"_id": "u3:reset_password"}, {"$set": {OUTBOX_FIELD: {}, PENDING_FIELD: 0}}
    )
    assert await delete_documents(mongo_db["codes"], {"_id": {"$in": ["u2:reset_password"]}}) == 1
    assert await delete_documents(mongo_db["codes"], {"_id": "u3:reset_password"}) == 1
    assert await delete_documents(mongo_db["codes"], {"_id": "nobody"}) == 0
    assert await mongo_db["codes"].count_documents({}) == 0
    assert await relay.relay_once() == 1  # the event moved aside is still published
    await recorder.wait_for(1)
    await asyncio.sleep(0.3)
    assert [e.id for e in recorder.events] == [waiting.id]
    assert await relay.relay_once() == 0  # once
    await consumer.stop()


async def test_a_delete_racing_a_new_event_keeps_both(bus, mongo_db):
    """A writer stages another event between the helper's read and its delete: the guarded
    delete misses, the helper reads again and moves the new event aside too."""
    first = thing("first")
    await issue_code(mongo_db, "race", first)
    late = thing("late")
    original_find_one = mongo_db["codes"].find_one
    staged = False

    async def find_one_then_stage(*args, **kwargs):
        nonlocal staged
        found = await original_find_one(*args, **kwargs)
        if not staged:
            staged = True
            await issue_code(mongo_db, "race", late)
        return found

    collection = mongo_db["codes"]
    collection.find_one = find_one_then_stage  # the writer lands between read and delete
    assert await delete_documents(collection, {"_id": "race"}) == 1
    recorder = Recorder()
    consumer = await start_consumer(bus, "race", ("test.thing.happened",), recorder)
    relay = OutboxRelay(mongo_db, ["codes"], bus, metrics=bus.metrics)
    assert await relay.relay_once() == 2
    await recorder.wait_for(2)
    assert {e.id for e in recorder.events} == {first.id, late.id}
    await consumer.stop()


class Unreachable:
    """A broker that never confirms (the relay keeps every event pending)."""

    def __init__(self, metrics) -> None:
        self.metrics = metrics

    async def publish(self, envelope) -> None:
        raise PublishFailed("the broker is unreachable")


async def test_an_expired_document_waits_for_its_events(bus, mongo_db):
    """The TTL path: expiry is swept by the relay, never by a TTL index, and only for
    documents whose events were all published."""
    recorder = Recorder()
    consumer = await start_consumer(bus, "expiry", ("test.thing.happened",), recorder)
    past = datetime.now(UTC) - timedelta(minutes=1)
    waiting = thing("expired-but-unsent")
    await issue_code(mongo_db, "old:verify_email", waiting, expires_at=past)
    await mongo_db["codes"].insert_one(
        {"_id": "old:done", "code": {"expires": stored_time(past)}, PENDING_FIELD: 0}
    )
    await mongo_db["codes"].insert_one(
        {"_id": "fresh", "code": {"expires": stored_time(past + timedelta(hours=1))}}
    )
    expiry = [Expiry("codes", "code.expires")]
    down = OutboxRelay(
        mongo_db, ["codes"], Unreachable(bus.metrics), metrics=bus.metrics, expiry=expiry
    )
    with pytest.raises(PublishFailed):
        await down.relay_once()
    await down.sweep_expired()
    remaining = {doc["_id"] async for doc in mongo_db["codes"].find({})}
    assert remaining == {"old:verify_email", "fresh"}  # the unsent one waits; the sent one went
    await down.stop()

    relay = OutboxRelay(mongo_db, ["codes"], bus, metrics=bus.metrics, expiry=expiry)
    assert await relay.relay_once() == 1
    await relay.sweep_expired()
    assert {doc["_id"] async for doc in mongo_db["codes"].find({})} == {"fresh"}
    await recorder.wait_for(1)
    assert [e.id for e in recorder.events] == [waiting.id]
    await consumer.stop()


async def test_a_ttl_index_on_an_outbox_collection_is_refused(mongo_db):
    await ensure_indexes(mongo_db, [ttl_index("codes", "code.expires")])
    with pytest.raises(RuntimeError, match="TTL"):
        await refuse_ttl_indexes(mongo_db, ["codes"])
    # The same key declared without the TTL replaces the index at start-up.
    await ensure_indexes(mongo_db, [Index("codes", asc("code.expires.at"))])
    await refuse_ttl_indexes(mongo_db, ["codes"])
    past = datetime.now(UTC) - timedelta(minutes=1)
    await mongo_db["codes"].insert_one(
        {"_id": "kept", "code": {"expires": stored_time(past)}, PENDING_FIELD: 1}
    )
    await eventually(lambda: _present(mongo_db, "kept"))


async def _present(mongo_db, doc_id: str) -> bool:
    return await mongo_db["codes"].find_one({"_id": doc_id}) is not None

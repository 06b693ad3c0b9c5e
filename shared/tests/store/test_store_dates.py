"""Store contract of stored times (``switchyard.mongo.dates``): the one shape every service
writes, reads, range-queries, sorts and expires times with, on both backends.

Runs against the embedded server here and against a real MongoDB when ``MONGO_URL`` is
set or a Docker engine answers; the ``known_difference`` tests show what the helpers
avoid (plain BSON dates compare by whole seconds on the embedded store).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo import ReturnDocument

from switchyard.mongo import (
    ensure_indexes,
    loaded_time,
    stored_time,
    time_range,
    time_sort_key,
    ttl_index,
)

pytestmark = pytest.mark.integration

# Sub-millisecond digits on purpose: a BSON date keeps milliseconds, a stored time all of it.
MOMENT = datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)
AT_MS = datetime(2026, 3, 1, 12, 0, 0, 123_000, tzinfo=UTC)


async def test_stored_time_round_trips_through_every_write_path(mongo_db):
    col = mongo_db["times"]
    value = stored_time(MOMENT)
    await col.insert_one({"_id": "insert", "t": value})
    await col.insert_one({"_id": "set"})
    await col.update_one({"_id": "set"}, {"$set": {"t": value}})
    await col.insert_one({"_id": "nested"})
    await col.update_one({"_id": "nested"}, {"$set": {"state.t": value, "map.k": {"t": value}}})
    await col.update_one({"_id": "upsert"}, {"$set": {"t": value}}, upsert=True)
    await col.update_one({"_id": "on-insert"}, {"$setOnInsert": {"t": value}}, upsert=True)
    await col.replace_one({"_id": "replace"}, {"_id": "replace", "t": value}, upsert=True)
    await col.insert_many([{"_id": "many"}, {"_id": "and-return"}])
    await col.update_many({"_id": "many"}, {"$set": {"t": value}})
    returned = await col.find_one_and_update(
        {"_id": "and-return"}, {"$set": {"t": value}}, return_document=ReturnDocument.AFTER
    )
    assert loaded_time(returned["t"]) == MOMENT

    docs = {doc["_id"]: doc async for doc in col.find({})}
    found = [docs[name]["t"] for name in docs if name != "nested"]
    found += [docs["nested"]["state"]["t"], docs["nested"]["map"]["k"]["t"]]
    assert len(found) == 9
    for stored in found:
        assert loaded_time(stored) == MOMENT  # to the microsecond, as written
        assert loaded_time(stored).utcoffset() == timedelta(0)
        # The date half stays a real date (not the string a bare $set would leave): TTL
        # indexes and people read it; it holds the millisecond, as BSON dates do.
        assert isinstance(stored["at"], datetime) and stored["at"] == AT_MS
        assert stored == value


async def test_time_range_is_exact_to_the_microsecond(mongo_db):
    """Times 1 µs to 900 ms apart inside one second: every bound separates them exactly."""
    col = mongo_db["times"]
    base = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    offsets = [0, 1, 150, 151, 900, 1000, 1001, 60_000]  # milliseconds
    await col.insert_many(
        [{"_id": ms, "t": stored_time(base + timedelta(milliseconds=ms))} for ms in offsets]
    )
    probe = base + timedelta(milliseconds=151)
    await col.insert_many(
        [
            {"_id": "µs-before", "t": stored_time(probe - timedelta(microseconds=1))},
            {"_id": "µs-after", "t": stored_time(probe + timedelta(microseconds=1))},
        ]
    )
    assert (
        await col.count_documents(
            time_range("t", before=probe, after=base + timedelta(milliseconds=150))
        )
        == 1
    )
    await col.delete_many({"_id": {"$in": ["µs-before", "µs-after"]}})

    async def ids(query):
        return sorted([doc["_id"] async for doc in col.find(query)])

    assert await ids(time_range("t", before=probe)) == [0, 1, 150]
    assert await ids(time_range("t", at_or_before=probe)) == [0, 1, 150, 151]
    assert await ids(time_range("t", after=probe)) == [900, 1000, 1001, 60_000]
    assert await ids(time_range("t", at_or_after=probe)) == [151, 900, 1000, 1001, 60_000]
    window = time_range(
        "t", at_or_after=base + timedelta(milliseconds=1), before=base + timedelta(seconds=1)
    )
    assert await ids(window) == [1, 150, 151, 900]
    assert await col.count_documents(window) == 4
    # A guard inside an update and an $or with a missing field, as the services use them.
    missing_or_older = {"$or": [{"t": {"$exists": False}}, time_range("t", before=probe)]}
    await col.insert_one({"_id": "none"})
    assert await col.count_documents(missing_or_older) == 4
    guarded = await col.update_one(
        {"_id": 900, **time_range("t", before=base + timedelta(milliseconds=901))},
        {"$set": {"hit": True}},
    )
    assert guarded.modified_count == 1
    missed = await col.update_one(
        {"_id": 900, **time_range("t", before=base + timedelta(milliseconds=900))},
        {"$set": {"hit": False}},
    )
    assert missed.matched_count == 0
    # Ordering by the sort key is exact too.
    newest_first = [
        doc["_id"] async for doc in col.find({"t": {"$exists": True}}).sort(time_sort_key("t"), -1)
    ]
    assert newest_first == sorted(offsets, reverse=True)


async def test_ttl_index_on_a_stored_time_expires_documents(mongo_db, store_backend):
    """The TTL index keys the BSON date (MongoDB expires nothing else); past documents go,
    future ones stay. MongoDB's TTL monitor runs once a minute, so there the test checks
    the index and that the indexed value is a BSON date; the embedded store purges on read."""
    await ensure_indexes(mongo_db, [ttl_index("codes", "expires")])
    col = mongo_db["codes"]
    now = datetime.now(UTC)
    await col.insert_one({"_id": "past", "expires": stored_time(now - timedelta(seconds=5))})
    await col.insert_one({"_id": "future", "expires": stored_time(now + timedelta(hours=1))})
    await col.insert_one({"_id": "set-later"})
    await col.update_one(
        {"_id": "set-later"}, {"$set": {"expires": stored_time(now - timedelta(seconds=5))}}
    )
    info = await col.index_information()
    ttl = [spec for spec in info.values() if "expireAfterSeconds" in spec]
    assert [(list(spec["key"]), spec["expireAfterSeconds"]) for spec in ttl] == [
        ([("expires.at", 1)], 0)
    ]
    if store_backend == "embedded":
        remaining = sorted([doc["_id"] async for doc in col.find({})])
        assert remaining == ["future"]
    else:
        assert await col.count_documents({"expires.at": {"$type": "date"}}) == 3


def test_stored_time_refuses_a_naive_datetime():
    with pytest.raises(ValueError, match="UTC offset"):
        stored_time(datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="at least one bound"):
        time_range("t")


async def test_known_difference_plain_dates_compare_by_whole_seconds(mongo_db, store_backend):
    """On the embedded store, plain BSON dates are compared through SQLite ``datetime()``,
    which drops the fraction: dates in the same second are equal and neither is less.
    This is why ``time_range`` compares ``unix_ms``; real MongoDB compares dates exactly."""
    col = mongo_db["times"]
    base = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    await col.insert_many(
        [{"_id": ms, "at": base + timedelta(milliseconds=ms)} for ms in (100, 200, 900)]
    )
    probe = base + timedelta(milliseconds=150)
    less = sorted([doc["_id"] async for doc in col.find({"at": {"$lt": probe}})])
    equal = sorted(
        [doc["_id"] async for doc in col.find({"at": base + timedelta(milliseconds=200)})]
    )
    if store_backend == "embedded":
        assert less == [] and equal == [100, 200, 900]
    else:
        assert less == [100] and equal == [200]


async def test_known_difference_dotted_set_of_a_bare_datetime(mongo_db, store_backend):
    """``{"$set": {"sent.at": now}}`` (a date through a dotted path) is stored as a string on
    the embedded store, like a bare ``$set``; ``stored_time`` is always set as a whole value."""
    col = mongo_db["times"]
    await col.insert_one({"_id": 1})
    await col.update_one({"_id": 1}, {"$set": {"sent.at": MOMENT}})
    doc = await col.find_one({"_id": 1})
    if store_backend == "embedded":
        assert isinstance(doc["sent"]["at"], str)
    else:
        assert doc["sent"]["at"] == AT_MS

"""Store shapes the auth service relies on beyond shared/tests/store, pinned against the
embedded server (and a real MongoDB where one is reachable)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from switchyard.mongo import Index, ensure_indexes, loaded_time, stored_time, time_range
from switchyard.mongo.client import asc

pytestmark = pytest.mark.integration


def window_ends(until: datetime) -> dict:
    """A budget's own window: its end, matched exactly (to the microsecond)."""
    return time_range("window_ends", at_or_after=until, at_or_before=until)


async def test_guarded_increment_in_a_live_window_is_exact(mongo_db):
    """The attempt budget: many racers, a stored-time window and a counter cap."""
    col = mongo_db["budgets"]
    now = datetime.now(UTC)
    await col.insert_one(
        {"_id": "k", "used": 0, "window_ends": stored_time(now + timedelta(hours=1))}
    )

    async def take():
        return await col.find_one_and_update(
            {"_id": "k", **time_range("window_ends", after=now), "used": {"$lt": 5}},
            {"$inc": {"used": 1}, "$set": {"last_attempt": stored_time(now)}},
            return_document=ReturnDocument.AFTER,
        )

    taken = [doc for doc in await asyncio.gather(*(take() for _ in range(40))) if doc]
    assert sorted(doc["used"] for doc in taken) == [1, 2, 3, 4, 5]
    assert loaded_time(taken[0]["last_attempt"]) == now


async def test_guarded_upsert_collides_with_a_live_document(mongo_db):
    """Opening a window: the guard (a range on a stored time, and the spacing since the last
    attempt) misses a live document, the upsert then hits its _id."""
    col = mongo_db["budgets"]
    now = datetime.now(UTC)
    spacing = timedelta(seconds=60)

    def guard(at: datetime) -> dict:
        return {
            "_id": "k",
            **time_range("window_ends", at_or_before=at),
            **time_range("last_attempt", at_or_before=at - spacing),
        }

    def update(at: datetime) -> dict:
        return {
            "$set": {
                "used": 1,
                "window_ends": stored_time(at + timedelta(hours=1)),
                "last_attempt": stored_time(at),
            }
        }

    await col.update_one(guard(now), update(now), upsert=True)
    with pytest.raises(DuplicateKeyError):
        await col.update_one(guard(now), update(now), upsert=True)
    later = now + timedelta(hours=1)  # the window ends exactly now: it may reopen
    reopened = await col.update_one(guard(later), update(later), upsert=True)
    assert reopened.modified_count == 1
    doc = await col.find_one({"_id": "k"})
    assert loaded_time(doc["window_ends"]) == later + timedelta(hours=1)


async def test_exact_window_match_and_once_per_window(mongo_db):
    """Refund and exhaustion match the window by its exact end (microseconds: two windows in
    one millisecond are still two); "not yet exhausted in this window" is ``$exists: false``
    or an earlier window's end, inside ``$and`` (store contract)."""
    col = mongo_db["budgets"]
    until = datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    await col.insert_one({"_id": "k", "used": 5, "window_ends": stored_time(until)})
    await col.insert_one(
        {"_id": "next-µs", "used": 5, "window_ends": stored_time(until + timedelta(microseconds=1))}
    )

    def guard(key: str) -> dict:
        return {
            "$and": [
                {"_id": key},
                window_ends(until),
                {"used": {"$gte": 5}},
                {
                    "$or": [
                        {"exhausted_window": {"$exists": False}},
                        time_range("exhausted_window", before=until),
                    ]
                },
            ]
        }

    mark = {"$set": {"exhausted_window": stored_time(until)}}
    first = await col.update_one(guard("k"), mark)
    second = await col.update_one(guard("k"), mark)
    assert (first.modified_count, second.modified_count) == (1, 0)
    assert (await col.update_one(guard("next-µs"), mark)).matched_count == 0  # not its window
    refund = await col.update_one(
        {"_id": "k", **window_ends(until), "used": {"$gt": 0}}, {"$inc": {"used": -1}}
    )
    assert refund.modified_count == 1
    assert (await col.find_one({"_id": "k"}))["used"] == 4


async def test_known_difference_ne_on_a_missing_field_in_an_update(mongo_db, store_backend):
    """On the embedded server ``$ne`` in an update's filter does not match a document that
    lacks the field (``count_documents`` does). Code uses ``$exists``/``$or`` instead."""
    col = mongo_db["budgets"]
    await col.insert_one({"_id": "k"})
    result = await col.update_one({"_id": "k", "x": {"$ne": 3}}, {"$set": {"y": 1}})
    assert await col.count_documents({"_id": "k", "x": {"$ne": 3}}) == 1
    assert result.matched_count == (0 if store_backend == "embedded" else 1)


async def test_extending_a_code_sets_its_sub_document_whole(mongo_db):
    """Extending a code: the whole ``code`` sub-document, stored times inside, is written
    again (never a time at a dotted path); reads and the expiry sweep range on it."""
    col = mongo_db["codes"]
    now = datetime.now(UTC)

    def code(expires: datetime) -> dict:
        return {
            "hash": "h",
            "salt": "s",
            "sent": stored_time(now),
            "expires": stored_time(expires),
        }

    await col.insert_one({"_id": "u:p", "code": code(now + timedelta(minutes=10))})
    later = now + timedelta(minutes=30)
    await col.update_one({"_id": "u:p", "code.hash": "h"}, {"$set": {"code": code(later)}})
    live_after = time_range("code.expires", after=now + timedelta(minutes=20))
    assert await col.count_documents({"_id": "u:p", **live_after}) == 1
    doc = await col.find_one({"_id": "u:p"})
    assert loaded_time(doc["code"]["expires"]) == later
    assert loaded_time(doc["code"]["sent"]) == now


async def test_sparse_unique_index_and_backfill_of_a_missing_field(mongo_db):
    """The address comparison key: unique where present, absent on documents written before
    it existed; the start-up backfill finds those with ``$exists: false``."""
    await ensure_indexes(mongo_db, [Index("users", asc("email_key"), unique=True, sparse=True)])
    col = mongo_db["users"]
    await col.insert_many([{"_id": "old1", "email": "a@x"}, {"_id": "old2", "email": "b@x"}])
    await col.insert_one({"_id": "new", "email": "c@x", "email_key": "c@x"})
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"_id": "dup", "email": "C@x", "email_key": "c@x"})
    missing = await col.find({"email_key": {"$exists": False}}).to_list()
    assert sorted(doc["_id"] for doc in missing) == ["old1", "old2"]
    await col.update_one(
        {"_id": "old1", "email_key": {"$exists": False}}, {"$set": {"email_key": "a@x"}}
    )
    with pytest.raises(DuplicateKeyError):
        await col.update_one({"_id": "old2"}, {"$set": {"email_key": "a@x"}})
    assert await col.count_documents({"email_key": "a@x"}) == 1


async def test_rotation_and_the_rotated_token_record(mongo_db):
    """A family: rotation guarded on the current hash, not revoked (null) and not expired
    (a stored time); the rotated token recorded once in its own collection, found by its
    hash *and* family, and swept by the expiry rule's range on its stored time."""
    col, records = mongo_db["sessions"], mongo_db["rotated_refresh_tokens"]
    now = datetime.now(UTC)
    expires = stored_time(now + timedelta(days=30))
    await col.insert_one({"_id": "f", "current_hash": "h2", "revoked": None, "expires": expires})
    live = {"_id": "f", "current_hash": "h2", "revoked": None, **time_range("expires", after=now)}
    rotated = await col.find_one_and_update(
        live, {"$set": {"current_hash": "h3"}}, return_document=ReturnDocument.AFTER
    )
    assert rotated is not None and rotated["current_hash"] == "h3"
    assert (await col.update_one(live, {"$set": {"current_hash": "h4"}})).matched_count == 0
    for _ in range(2):  # a repeated record is one record, its first write kept
        await records.update_one(
            {"_id": "h2"},
            {"$setOnInsert": {"family_id": "f", "expires": rotated["expires"]}},
            upsert=True,
        )
    assert await records.count_documents({}) == 1
    assert await records.find_one({"_id": "h2", "family_id": "f"}) is not None
    assert await records.find_one({"_id": "h2", "family_id": "other"}) is None
    assert await records.find_one({"_id": "h3", "family_id": "f"}) is None
    later = now + timedelta(days=31)
    assert await records.count_documents(time_range("expires", before=later)) == 1
    await col.update_one(
        {"_id": "f", "revoked": None},
        {"$set": {"revoked": stored_time(now), "revoked_reason": "x"}},
    )
    assert await col.count_documents({"_id": "f", "revoked": None}) == 0

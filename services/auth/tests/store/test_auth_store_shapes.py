"""Store shapes the auth service relies on beyond shared/tests/store, pinned against the
embedded server (and a real MongoDB where one is reachable)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from switchyard.mongo import Index, ensure_indexes
from switchyard.mongo.client import asc

pytestmark = pytest.mark.integration


def ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def test_guarded_increment_in_a_live_window_is_exact(mongo_db):
    """The attempt budget: many racers, a nested-date window and a counter cap."""
    col = mongo_db["budgets"]
    now = datetime.now(UTC)
    await col.insert_one({"_id": "k", "used": 0, "window": {"until": ms(now + timedelta(hours=1))}})

    async def take():
        return await col.find_one_and_update(
            {"_id": "k", "window.until": {"$gt": now}, "used": {"$lt": 5}},
            {"$inc": {"used": 1}, "$set": {"last": {"at": now}}},
            return_document=ReturnDocument.AFTER,
        )

    taken = [doc for doc in await asyncio.gather(*(take() for _ in range(40))) if doc]
    assert sorted(doc["used"] for doc in taken) == [1, 2, 3, 4, 5]


async def test_guarded_upsert_collides_with_a_live_document(mongo_db):
    """Opening a window: the guard misses a live document, the upsert then hits its _id."""
    col = mongo_db["budgets"]
    now = datetime.now(UTC)
    guard = {"_id": "k", "window.until": {"$lte": now}}
    update = {"$set": {"used": 1, "window": {"until": ms(now + timedelta(hours=1))}}}
    await col.update_one(guard, update, upsert=True)
    with pytest.raises(DuplicateKeyError):
        await col.update_one(guard, update, upsert=True)
    later = now + timedelta(hours=2)
    reopened = await col.update_one(
        {"_id": "k", "window.until": {"$lte": later}},
        {"$set": {"used": 1, "window": {"until": ms(later + timedelta(hours=1))}}},
        upsert=True,
    )
    assert reopened.modified_count == 1


async def test_equality_on_a_millisecond_date_and_once_per_window(mongo_db):
    """Refund and exhaustion match the window by its exact end (cut to milliseconds, as the
    store keeps it); "not yet exhausted in this window" is ``$exists: false`` or an earlier
    window's end."""
    col = mongo_db["budgets"]
    until = ms(datetime.now(UTC) + timedelta(hours=1))
    await col.insert_one({"_id": "k", "used": 5, "window": {"until": until}})
    guard = {
        "_id": "k",
        "window.until": until,
        "$or": [{"exhausted": {"$exists": False}}, {"exhausted.at": {"$lt": until}}],
    }
    first = await col.update_one(guard, {"$set": {"exhausted": {"at": until}}})
    second = await col.update_one(guard, {"$set": {"exhausted": {"at": until}}})
    assert (first.modified_count, second.modified_count) == (1, 0)
    refund = await col.update_one(
        {"_id": "k", "window.until": until, "used": {"$gt": 0}}, {"$inc": {"used": -1}}
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


async def test_a_dotted_date_set_stays_a_date_when_the_sub_document_is_set_whole(mongo_db):
    """Extending a code: the whole ``code`` sub-document is written again, so its dates stay
    dates (a bare datetime at a dotted path is not used)."""
    col = mongo_db["codes"]
    now = datetime.now(UTC)
    code = {"hash": "h", "salt": "s", "sent_at": now, "expires_at": now + timedelta(minutes=10)}
    await col.insert_one({"_id": "u:p", "code": code})
    later = now + timedelta(minutes=30)
    await col.update_one(
        {"_id": "u:p", "code.hash": "h"}, {"$set": {"code": {**code, "expires_at": later}}}
    )
    assert await col.count_documents({"code.expires_at": {"$gt": now + timedelta(minutes=20)}}) == 1


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


async def test_map_key_exists_for_rotated_tokens(mongo_db):
    col = mongo_db["sessions"]
    await col.insert_one({"_id": "f", "current_hash": "h2", "rotated": {"abc": 1}})
    await col.update_one({"_id": "f"}, {"$set": {"rotated.def": 1, "current_hash": "h3"}})
    assert await col.find_one({"_id": "f", "rotated.def": {"$exists": True}}) is not None
    assert await col.find_one({"_id": "f", "rotated.xyz": {"$exists": True}}) is None
    lean = await col.find_one({"_id": "f"}, {"rotated": 0})
    assert "rotated" not in lean and lean["current_hash"] == "h3"

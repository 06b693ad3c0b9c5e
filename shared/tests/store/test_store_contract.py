"""Store contract: every query and update shape Switchyard relies on, pinned.

Runs against the embedded MongoDB-wire server (nx-27017) by default and against
a real MongoDB when ``MONGO_URL`` is set or a Docker engine answers. A new shape
enters the code together with a test here (services add theirs in
``services/<name>/tests/store/``). Shapes DESIGN §2 lists as wrong on the
embedded server are never used, so they have no test here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError, OperationFailure

from switchyard.mongo import (
    Index,
    ensure_indexes,
    loaded_time,
    stored_time,
    time_range,
    ttl_index,
)
from switchyard.mongo.client import asc

pytestmark = pytest.mark.integration


async def test_single_document_inc_is_exact_under_concurrency(mongo_db):
    col = mongo_db["counters"]
    await col.insert_one({"_id": "c", "n": 0, "nested": {"n": 0}})
    await asyncio.gather(
        *(col.update_one({"_id": "c"}, {"$inc": {"n": 1, "nested.n": 2}}) for _ in range(200))
    )
    doc = await col.find_one({"_id": "c"})
    assert doc["n"] == 200 and doc["nested"]["n"] == 400


async def test_guarded_decrement_never_goes_negative(mongo_db):
    col = mongo_db["wallets"]
    await col.insert_one({"_id": "w", "balance": 100})

    async def spend() -> int:
        result = await col.update_one(
            {"_id": "w", "balance": {"$gte": 30}}, {"$inc": {"balance": -30}}
        )
        return result.modified_count

    spent = sum(await asyncio.gather(*(spend() for _ in range(10))))
    assert spent == 3
    assert (await col.find_one({"_id": "w"}))["balance"] == 10


async def test_map_field_set_exists_unset_with_counter(mongo_db):
    """The outbox shape: $set of a sub-document under a map key, $inc counter, guarded $unset."""
    col = mongo_db["things"]
    staged = datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    await col.insert_one(
        {
            "_id": "a",
            "outbox": {"e1": {"json": '{"id": "e1"}', "staged": stored_time(staged)}},
            "outbox_pending": 1,
        }
    )
    await col.update_one(
        {"_id": "a"},
        {
            "$set": {
                "state": "x",
                "outbox.e2": {
                    "json": '{"id": "e2"}',
                    "type": "t",
                    "meta": {"k": [1, 2]},
                    "staged": stored_time(staged),
                },
            },
            "$inc": {"outbox_pending": 1},
        },
    )
    doc = await col.find_one({"_id": "a"})
    assert doc["outbox"]["e2"]["meta"] == {"k": [1, 2]}  # a real sub-document, not a string
    assert loaded_time(doc["outbox"]["e2"]["staged"]) == staged  # the stored time survives
    assert isinstance(doc["outbox"]["e2"]["staged"]["at"], datetime)
    assert doc["outbox_pending"] == 2
    assert await col.count_documents({"outbox.e2": {"$exists": True}}) == 1
    guard = {"_id": "a", "outbox.e1": {"$exists": True}}
    mark = {"$unset": {"outbox.e1": ""}, "$inc": {"outbox_pending": -1}}
    assert (await col.update_one(guard, mark)).modified_count == 1
    assert (await col.update_one(guard, mark)).modified_count == 0  # a second relay changes nothing
    doc = await col.find_one({"_id": "a"})
    assert set(doc["outbox"]) == {"e2"} and doc["outbox_pending"] == 1


async def test_find_gt_with_projection_and_limit(mongo_db):
    col = mongo_db["things"]
    await col.insert_many(
        [
            {"_id": f"d{n}", "outbox_pending": n % 3, "outbox": {}, "big": "x" * 100}
            for n in range(9)
        ]
    )
    docs = await col.find({"outbox_pending": {"$gt": 0}}, {"outbox": 1}, limit=4).to_list()
    assert len(docs) == 4
    assert all(set(d) == {"_id", "outbox"} for d in docs)
    assert await col.count_documents({"outbox_pending": {"$gt": 0}}) == 6


async def test_unordered_bulk_write_of_guarded_updates(mongo_db):
    col = mongo_db["things"]
    await col.insert_many(
        [{"_id": n, "outbox": {"e": {"x": 1}}, "outbox_pending": 1} for n in range(5)]
    )
    ops = [
        UpdateOne(
            {"_id": n, "outbox.e": {"$exists": True}},
            {"$unset": {"outbox.e": ""}, "$inc": {"outbox_pending": -1}},
        )
        for n in range(6)
    ]
    result = await col.bulk_write(ops, ordered=False)
    assert result.modified_count == 5
    assert await col.count_documents({"outbox_pending": 0}) == 5


async def test_unique_index_and_duplicate_key(mongo_db):
    await ensure_indexes(mongo_db, [Index("users", asc("email"), unique=True)])
    col = mongo_db["users"]
    await col.insert_one({"_id": "u1", "email": "a@example.com"})
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"_id": "u2", "email": "a@example.com"})
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"_id": "u1", "email": "b@example.com"})
    await ensure_indexes(mongo_db, [Index("users", asc("email"), unique=True)])  # idempotent


async def test_compound_unique_index(mongo_db):
    await ensure_indexes(mongo_db, [Index("deliveries", asc("event_id", "channel"), unique=True)])
    col = mongo_db["deliveries"]
    await col.insert_one({"event_id": "e", "channel": "email"})
    await col.insert_one({"event_id": "e", "channel": "push"})
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"event_id": "e", "channel": "email"})


async def test_ttl_index_is_accepted(mongo_db):
    await ensure_indexes(mongo_db, [ttl_index("inbox", "done", expire_after=timedelta(hours=1))])
    info = await mongo_db["inbox"].index_information()
    assert any(spec.get("expireAfterSeconds") == 3600 for spec in info.values())


async def test_lease_taken_over_only_once_it_ran_out(mongo_db):
    """The relay lease (and the inbox claim): take it over only when its stored time has
    passed, to the millisecond, counting a fence."""
    col = mongo_db["outbox_leases"]
    now = datetime.now(UTC)
    await col.insert_one(
        {"_id": "svc", "owner": "a", "until": stored_time(now + timedelta(seconds=10)), "fence": 1}
    )

    def take_over() -> dict:
        return {
            "$set": {"owner": "b", "until": stored_time(now + timedelta(seconds=20))},
            "$inc": {"fence": 1},
        }

    lapsed = {"_id": "svc", **time_range("until", before=now)}
    assert (await col.update_one(lapsed, take_over())).matched_count == 0
    await col.update_one({"_id": "svc"}, {"$set": {"until": stored_time(now)}})
    assert (await col.update_one(lapsed, take_over())).matched_count == 0  # not before: at
    await col.update_one(
        {"_id": "svc"}, {"$set": {"until": stored_time(now - timedelta(milliseconds=1))}}
    )
    assert (await col.update_one(lapsed, take_over())).matched_count == 1
    doc = await col.find_one({"_id": "svc"})
    assert doc["owner"] == "b" and doc["fence"] == 2


async def test_find_one_and_update_compare_and_set(mongo_db):
    """Optimistic concurrency: only one of many racers wins a version-guarded update."""
    col = mongo_db["families"]
    await col.insert_one({"_id": "f", "version": 1, "current": "h1", "items": ["a"]})

    async def racer(n: int):
        return await col.find_one_and_update(
            {"_id": "f", "version": 1, "current": "h1"},
            {"$set": {"current": f"h{n}", "items": ["a", f"b{n}"]}, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )

    results = await asyncio.gather(*(racer(n) for n in range(2, 12)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    doc = await col.find_one({"_id": "f"})
    assert doc["version"] == 2 and doc["items"] == ["a", doc["current"].replace("h", "b")]


async def test_set_unset_and_delete_with_several_conditions(mongo_db):
    """The inbox: a claim with a lease, released only by its owner, completed with a time."""
    col = mongo_db["inbox"]
    now = datetime.now(UTC)
    lease = stored_time(now + timedelta(seconds=30))
    await col.insert_one({"_id": "k", "status": "processing", "owner": "o", "lease_expires": lease})
    assert (
        await col.delete_one({"_id": "k", "owner": "x", "status": "processing"})
    ).deleted_count == 0
    await col.update_one(
        {"_id": "k"},
        {"$set": {"status": "done", "done": stored_time(now)}, "$unset": {"lease_expires": ""}},
    )
    doc = await col.find_one({"_id": "k"})
    assert doc["status"] == "done" and "lease_expires" not in doc
    assert loaded_time(doc["done"]) == now and isinstance(doc["done"]["at"], datetime)


async def test_datetimes_round_trip_and_compare(mongo_db):
    col = mongo_db["times"]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    await col.insert_many([{"_id": n, "at": base + timedelta(minutes=n)} for n in range(5)])
    docs = await col.find({"at": {"$gte": base + timedelta(minutes=2)}}).sort("at", -1).to_list()
    assert [d["_id"] for d in docs] == [4, 3, 2]
    assert docs[0]["at"] == base + timedelta(minutes=4)


async def test_sort_skip_limit_and_cursor_pagination_by_id(mongo_db):
    col = mongo_db["items"]
    await col.insert_many([{"_id": f"i{n:03d}", "owner": "u" if n % 2 else "v"} for n in range(20)])
    page = await col.find({"owner": "u", "_id": {"$gt": "i005"}}).sort("_id", 1).limit(3).to_list()
    assert [d["_id"] for d in page] == ["i007", "i009", "i011"]


async def test_whole_array_replacement_and_scalar_push_pull_in(mongo_db):
    col = mongo_db["users"]
    await col.insert_one({"_id": "u", "roles": ["customer"], "tags": []})
    await col.update_one({"_id": "u"}, {"$set": {"roles": ["customer", "admin"]}})
    await col.update_one({"_id": "u"}, {"$push": {"tags": "a"}})
    await col.update_one({"_id": "u"}, {"$push": {"tags": "b"}})
    await col.update_one({"_id": "u"}, {"$pull": {"tags": "a"}})
    doc = await col.find_one({"_id": "u"})
    assert doc["roles"] == ["customer", "admin"] and doc["tags"] == ["b"]
    assert await col.count_documents({"roles": "admin"}) == 1
    assert await col.count_documents({"roles": {"$in": ["admin", "x"]}}) == 1
    assert await col.count_documents({"roles": {"$all": ["admin", "customer"]}}) == 1


async def test_upsert_replace_one(mongo_db):
    col = mongo_db["outbox_unroutable"]
    await col.replace_one({"_id": "e"}, {"_id": "e", "n": 1}, upsert=True)
    await col.replace_one({"_id": "e"}, {"_id": "e", "n": 2}, upsert=True)
    assert await col.count_documents({}) == 1
    assert (await col.find_one({"_id": "e"}))["n"] == 2


async def test_group_aggregation(mongo_db):
    col = mongo_db["ledger"]
    await col.insert_many(
        [
            {"account": "a", "amount": 5},
            {"account": "a", "amount": -2},
            {"account": "b", "amount": -3},
        ]
    )
    rows = await (
        await col.aggregate([{"$group": {"_id": None, "total": {"$sum": "$amount"}}}])
    ).to_list()
    assert rows[0]["total"] == 0


async def test_timestamps_in_updates_go_in_sub_documents(mongo_db):
    """How a datetime may enter an existing document so it stays a queryable date (TTL,
    range queries): inside a ``$set`` sub-document, by insert, or by upsert/replace."""
    col = mongo_db["times"]
    now = datetime.now(UTC)
    window = {"$gte": now - timedelta(seconds=5), "$lte": now + timedelta(seconds=5)}
    await col.insert_one({"_id": 1, "created_at": now})
    await col.update_one(
        {"_id": 1}, {"$set": {"done": {"at": now}, "state": {"name": "x", "since": now}}}
    )
    await col.replace_one({"_id": 2}, {"_id": 2, "at": now}, upsert=True)
    await col.update_one({"_id": 3}, {"$setOnInsert": {"at": now}}, upsert=True)
    doc = await col.find_one({"_id": 1})
    assert isinstance(doc["created_at"], datetime)
    assert isinstance(doc["done"]["at"], datetime)
    assert await col.count_documents({"created_at": window}) == 1
    assert await col.count_documents({"done.at": window}) == 1
    assert await col.count_documents({"state.since": window}) == 1
    assert await col.count_documents({"at": window}) == 2


async def test_known_differences_of_bare_datetimes_in_updates(mongo_db, store_backend):
    """On the embedded server ``$set`` of a bare datetime on an existing document stores a
    string, and ``$currentDate`` stores a value range queries cannot see. Code uses
    neither; this test documents why, and shows real MongoDB keeps queryable dates."""
    col = mongo_db["times"]
    now = datetime.now(UTC)
    window = {"$gte": now - timedelta(seconds=5), "$lte": now + timedelta(seconds=5)}
    await col.insert_one({"_id": 1})
    await col.update_one({"_id": 1}, {"$set": {"at": now}, "$currentDate": {"stamped": True}})
    doc = await col.find_one({"_id": 1})
    if store_backend == "embedded":
        assert isinstance(doc["at"], str)
        assert await col.count_documents({"stamped": window}) == 0
    else:
        assert isinstance(doc["at"], datetime)
        assert await col.count_documents({"stamped": window}) == 1


async def test_find_by_array_element_without_an_index(mongo_db):
    col = mongo_db["members"]
    await col.insert_many(
        [
            {"_id": n, "roles": ["customer", "admin"] if n % 3 == 0 else ["customer"]}
            for n in range(9)
        ]
    )
    assert len(await col.find({"roles": "admin"}).to_list()) == 3
    assert len(await col.find({"roles": {"$in": ["admin"]}}).to_list()) == 3


async def test_known_difference_index_on_an_array_field(mongo_db, store_backend):
    """On the embedded server ``find`` through an index on an array field misses documents
    that ``count_documents`` sees. Code never indexes array fields; this shows why."""
    col = mongo_db["indexed_members"]
    await col.create_index("roles")
    await col.insert_many(
        [
            {"_id": n, "roles": ["customer", "admin"] if n % 3 == 0 else ["customer"]}
            for n in range(9)
        ]
    )
    found = len(await col.find({"roles": "admin"}).to_list())
    assert await col.count_documents({"roles": "admin"}) == 3
    assert found == (0 if store_backend == "embedded" else 3)


async def test_update_many_by_id_list_guarded_by_a_counter(mongo_db):
    """The outbox's batched clear: ids in a list, guarded by the sequence seen at read time."""
    col = mongo_db["things"]
    await col.insert_many(
        [
            {"_id": n, "outbox": {f"e{n}": {"x": 1}}, "outbox_pending": 1, "outbox_seq": 1}
            for n in range(6)
        ]
    )
    await col.update_one(
        {"_id": 2},
        {"$set": {"outbox.late": {"x": 2}}, "$inc": {"outbox_pending": 1, "outbox_seq": 1}},
    )
    result = await col.update_many(
        {"_id": {"$in": [0, 1, 2, 3]}, "outbox_seq": 1},
        {"$set": {"outbox": {}, "outbox_pending": 0}},
    )
    assert result.modified_count == 3
    assert (await col.find_one({"_id": 2}))["outbox_pending"] == 2
    cleared = await col.find_one({"_id": 0})
    assert cleared["outbox"] == {} and cleared["outbox_pending"] == 0
    assert await col.count_documents({"outbox_pending": {"$gt": 0}}) == 3


async def test_known_difference_compound_index_naming_id(mongo_db, store_backend):
    """On the embedded server a compound index that names ``_id`` makes every later insert
    fail. Code never declares one (``_id`` is unique on its own); this shows why."""
    col = mongo_db["compound_id"]
    await col.create_index([("_id", 1), ("owner", 1)])
    if store_backend == "embedded":
        with pytest.raises(OperationFailure):
            await col.insert_one({"_id": "a", "owner": "u"})
    else:
        await col.insert_one({"_id": "a", "owner": "u"})
        assert await col.count_documents({}) == 1


async def test_known_difference_or_beside_other_conditions(mongo_db, store_backend):
    """On the embedded server a top-level ``$or`` next to other conditions loses the
    grouping (``a AND b OR c``): ``update_one({_id: X, $or: [...]})`` changed *another*
    document whose fields matched one branch. Code always writes ``$and: [..., {$or}]``."""
    col = mongo_db["or_guards"]
    await col.insert_many(
        [{"_id": "u1", "as_of": 100.0}, {"_id": "u2", "as_of": 500.0, "email": "two@x"}]
    )
    bare = {"_id": "u2", "$or": [{"as_of": {"$exists": False}}, {"as_of": {"$lt": 200.0}}]}
    result = await col.update_one(bare, {"$set": {"email": "evil@x"}})
    touched = [doc["_id"] async for doc in col.find({"email": "evil@x"})]
    assert touched == (["u1"] if store_backend == "embedded" else [])
    assert result.matched_count == (1 if store_backend == "embedded" else 0)


async def test_or_inside_and_is_exact_for_finds_updates_and_upserts(mongo_db):
    """The shape guards with alternatives use: ``$and`` of the key and an ``$or``."""
    col = mongo_db["and_or"]
    now = datetime.now(UTC)
    lapsed = stored_time(now - timedelta(milliseconds=1))
    await col.insert_many(
        [
            {"_id": "d1", "status": "sending", "lease_expires": lapsed},
            {"_id": "d2", "status": "sent", "lease_expires": lapsed},
            {"_id": "d3", "status": "pending"},
        ]
    )

    def claimable(doc_id: str) -> dict:
        return {
            "$and": [
                {"_id": doc_id},
                {
                    "$or": [
                        {"status": "pending"},
                        {"status": "sending", **time_range("lease_expires", before=now)},
                    ]
                },
            ]
        }

    assert await col.find_one_and_update(claimable("d2"), {"$set": {"owner": "me"}}) is None
    assert (await col.find_one_and_update(claimable("d1"), {"$set": {"owner": "me"}}))[
        "_id"
    ] == "d1"
    assert (await col.update_one(claimable("d3"), {"$set": {"owner": "me"}})).modified_count == 1
    assert sorted([d["_id"] async for d in col.find({"owner": "me"})]) == ["d1", "d3"]
    # Upserts: the key is taken from the $and; a failed guard on an existing key collides.
    with pytest.raises(DuplicateKeyError):
        await col.update_one(claimable("d2"), {"$set": {"owner": "x"}}, upsert=True)
    result = await col.update_one(claimable("d4"), {"$set": {"owner": "new"}}, upsert=True)
    assert result.upserted_id == "d4"
    # A range on a nested stored time next to a missing-or-zero alternative (the expiry
    # sweep); a millisecond past counts.
    dated = mongo_db["and_or_dates"]
    just_past = stored_time(now - timedelta(milliseconds=1))
    await dated.insert_many(
        [
            {"_id": "fresh", "code": {"expires": stored_time(now + timedelta(milliseconds=1))}},
            {"_id": "old", "code": {"expires": just_past}, "pending": 0},
            {"_id": "old-busy", "code": {"expires": just_past}, "pending": 2},
            {"_id": "old-bare", "code": {"expires": just_past}},
        ]
    )
    expired_and_idle = {
        "$and": [
            time_range("code.expires", before=now),
            {"$or": [{"pending": 0}, {"pending": {"$exists": False}}]},
        ]
    }
    assert (await dated.delete_many(expired_and_idle)).deleted_count == 2
    assert sorted([d["_id"] async for d in dated.find({})]) == ["fresh", "old-busy"]


async def test_set_on_insert_only_when_the_upsert_inserts(mongo_db):
    """The outbox epoch: ``$setOnInsert`` beside ``$set``/``$inc`` in an upsert."""
    col = mongo_db["epochs"]
    update = {"$set": {"v": 1}, "$inc": {"n": 1}, "$setOnInsert": {"epoch": "first"}}
    await col.update_one({"_id": "k"}, update, upsert=True)
    update = {"$set": {"v": 2}, "$inc": {"n": 1}, "$setOnInsert": {"epoch": "second"}}
    await col.update_one({"_id": "k"}, update, upsert=True)
    assert await col.find_one({"_id": "k"}) == {"_id": "k", "v": 2, "n": 2, "epoch": "first"}


async def test_update_many_guarded_by_ids_and_epochs(mongo_db):
    """The relay's batched clear: ids and per-incarnation epochs in lists, plus the seq."""
    col = mongo_db["incarnations"]
    await col.insert_many(
        [
            {"_id": f"k{n}", "outbox_seq": 1, "outbox_epoch": f"e{n}", "outbox_pending": 1}
            for n in range(3)
        ]
    )
    await col.delete_one({"_id": "k1"})
    await col.insert_one(
        {"_id": "k1", "outbox_seq": 1, "outbox_epoch": "reborn", "outbox_pending": 1}
    )
    result = await col.update_many(
        {
            "_id": {"$in": ["k0", "k1", "k2"]},
            "outbox_seq": 1,
            "outbox_epoch": {"$in": ["e0", "e1", "e2"]},
        },
        {"$set": {"outbox_pending": 0}},
    )
    assert result.modified_count == 2
    assert (await col.find_one({"_id": "k1"}))["outbox_pending"] == 1


async def test_known_difference_integer_ids_and_in_on_another_field(mongo_db, store_backend):
    """On the embedded server, with *integer* ``_id`` values, ``update_many`` filtered by
    ``$in`` on another field changed the wrong document. Every id in the code is a
    string (where the same filter is exact, above); this shows why they must be."""
    col = mongo_db["int_ids"]
    await col.insert_many([{"_id": n, "e": f"e{n}", "p": 1} for n in range(3)])
    await col.update_many({"e": {"$in": ["e0", "e2"]}}, {"$set": {"p": 0}})
    changed = sorted([doc["_id"] async for doc in col.find({"p": 0})])
    assert changed == ([1] if store_backend == "embedded" else [0, 2])


async def test_declared_index_options_replace_the_stored_ones(mongo_db):
    """ensure_indexes drops an index whose TTL changed (TTL indexes leave outbox collections)."""
    await ensure_indexes(mongo_db, [Index("ttl_gone", asc("at.when"), expire_after_seconds=0)])
    await ensure_indexes(mongo_db, [Index("ttl_gone", asc("at.when"))])
    indexes = [index async for index in await mongo_db["ttl_gone"].list_indexes()]
    assert [dict(i["key"]) for i in indexes if "at.when" in i["key"]] == [{"at.when": 1}]
    assert not any("expireAfterSeconds" in index for index in indexes)
    past = datetime.now(UTC) - timedelta(hours=1)
    await mongo_db["ttl_gone"].insert_one({"_id": "kept", "at": {"when": past}})
    await asyncio.sleep(0.2)
    assert await mongo_db["ttl_gone"].find_one({"_id": "kept"}) is not None


async def test_version_guard_from_a_document_that_has_none_yet(mongo_db):
    """Optimistic concurrency on documents written before they counted versions: the first
    guarded write expects no version; every write increments it."""
    col = mongo_db["versioned"]
    await col.insert_one({"_id": "u", "status": "active", "name": "a"})
    first = {"_id": "u", "status": "active", "version": {"$exists": False}}
    update = {"$set": {"name": "b"}, "$inc": {"version": 1}}
    assert (await col.find_one_and_update(first, update, return_document=ReturnDocument.AFTER))[
        "version"
    ] == 1
    assert await col.find_one_and_update(first, update) is None  # the read it came from is stale
    second = {"_id": "u", "status": "active", "version": 1}
    assert (
        await col.update_one(second, {"$set": {"name": "c"}, "$inc": {"version": 1}})
    ).modified_count == 1
    assert (await col.find_one({"_id": "u"}))["version"] == 2

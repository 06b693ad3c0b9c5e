"""Store contract of the payments service: every query and update shape the ledger and the
records rely on, pinned on the embedded server (and real MongoDB when one is reachable)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymongo import ReturnDocument

from switchyard.envelope import utcnow
from switchyard.mongo import stored_time, time_range

pytestmark = pytest.mark.integration

T1, T2 = "tr_" + "a" * 32, "tr_" + "b" * 32


def account(**fields):
    return {
        "_id": "wallet:USD:u1",
        "balance": 0,
        "seq": 0,
        "pruned": 0,
        "entries": 0,
        "applied": {},
        **fields,
    }


async def test_guarded_inc_apply_with_map_entry_happens_once_and_never_overdraws(mongo_db):
    col = mongo_db["accounts"]
    await col.insert_one(account(_id="hold:USD:of1", balance=100))

    async def debit(tid: str) -> int:
        result = await col.update_one(
            {
                "_id": "hold:USD:of1",
                "pruned": 0,
                f"applied.{tid}": {"$exists": False},
                "balance": {"$gte": 30},
            },
            {
                "$inc": {"balance": -30, "entries": 1},
                "$set": {f"applied.{tid}": {"amount": -30, "at": 1}},
            },
        )
        return result.modified_count

    # The same transfer ten times at once: one apply. Ten different ones: three fit.
    assert sum(await asyncio.gather(*(debit(T1) for _ in range(10)))) == 1
    assert sum(await asyncio.gather(*(debit(f"tr_{n:032d}") for n in range(10)))) == 2
    doc = await col.find_one({"_id": "hold:USD:of1"})
    assert doc["balance"] == 10 and doc["entries"] == 3 and len(doc["applied"]) == 3
    assert doc["applied"][T1] == {"amount": -30, "at": 1}
    refusal = await col.update_one(
        {
            "_id": "hold:USD:of1",
            "pruned": 0,
            f"applied.{T2}": {"$exists": False},
            "balance": {"$lt": 30},
        },
        {"$set": {f"applied.{T2}": {"refused": True, "amount": 0}}, "$inc": {"entries": 1}},
    )
    assert refusal.modified_count == 1
    assert (await col.find_one({"_id": "hold:USD:of1"}))["balance"] == 10


async def test_sequenced_compare_and_set_has_one_winner_per_seq(mongo_db):
    col = mongo_db["accounts"]
    await col.insert_one(account(balance=50))

    async def cas(n: int) -> int:
        tid = f"tr_{n:032d}"
        result = await col.update_one(
            {"_id": "wallet:USD:u1", "pruned": 0, "seq": 0, f"applied.{tid}": {"$exists": False}},
            {
                "$set": {
                    "balance": 50 + n,
                    f"applied.{tid}": {"amount": n, "seq": 1, "after": 50 + n},
                },
                "$inc": {"seq": 1, "entries": 1},
            },
        )
        return result.modified_count

    assert sum(await asyncio.gather(*(cas(n) for n in range(1, 11)))) == 1
    doc = await col.find_one({"_id": "wallet:USD:u1"})
    [(tid, entry)] = doc["applied"].items()
    assert doc["seq"] == 1 and doc["balance"] == entry["after"] == 50 + int(tid[3:])


async def test_known_difference_projection_of_one_map_key(mongo_db, store_backend):
    """A projected ``applied.<id>`` comes back nested on MongoDB and under the dotted name
    on the embedded server; ``ledger.applied_entry`` reads both."""
    from payments_svc.adapters.ledger import applied_entry

    col = mongo_db["accounts"]
    await col.insert_one(account(applied={T1: {"amount": -5}, T2: {"amount": 7}}))
    doc = await col.find_one({"_id": "wallet:USD:u1"}, {"balance": 1, f"applied.{T1}": 1})
    if store_backend == "embedded":
        assert doc[f"applied.{T1}"] == {"amount": -5} and "applied" not in doc
    else:
        assert doc["applied"] == {T1: {"amount": -5}}
    assert applied_entry(doc, T1) == {"amount": -5} and applied_entry(doc, T2) is None
    missing = await col.find_one({"_id": "wallet:USD:u1"}, {"balance": 1, "applied.tr_x": 1})
    assert applied_entry(missing, "tr_x") is None


async def test_prune_unsets_several_map_keys_guarded_by_the_counter(mongo_db):
    col = mongo_db["accounts"]
    await col.insert_one(
        account(entries=3, applied={T1: {"amount": 1}, T2: {"amount": 2}, "tr_c": {"amount": 3}})
    )
    prune = {
        "$unset": {f"applied.{T1}": "", f"applied.{T2}": ""},
        "$inc": {"pruned": 1, "entries": -2},
    }
    assert (await col.update_one({"_id": "wallet:USD:u1", "pruned": 0}, prune)).modified_count == 1
    assert (await col.update_one({"_id": "wallet:USD:u1", "pruned": 0}, prune)).modified_count == 0
    doc = await col.find_one({"_id": "wallet:USD:u1"})
    assert doc["applied"] == {"tr_c": {"amount": 3}} and doc["entries"] == 1 and doc["pruned"] == 1
    # After the prune, an apply guarded by the old counter fails although the key is gone.
    late = await col.update_one(
        {"_id": "wallet:USD:u1", "pruned": 0, f"applied.{T1}": {"$exists": False}},
        {"$inc": {"balance": 1}},
    )
    assert late.modified_count == 0
    found = await col.find({"entries": {"$gt": 0}}, {"applied": 1, "pruned": 1}).to_list()
    assert [d["_id"] for d in found] == ["wallet:USD:u1"]


async def test_open_and_freeze_upserts(mongo_db):
    col = mongo_db["accounts"]
    fresh = {"kind": "wallet", "balance": 0, "frozen": False}
    opened = await col.update_one({"_id": "wallet:USD:u1"}, {"$setOnInsert": fresh}, upsert=True)
    assert opened.upserted_id == "wallet:USD:u1"  # the ledger's snapshot of a new hold/escrow
    await col.update_one({"_id": "wallet:USD:u1"}, {"$inc": {"balance": 5}})
    again = await col.update_one({"_id": "wallet:USD:u1"}, {"$setOnInsert": fresh}, upsert=True)
    assert again.upserted_id is None  # no reset, and it says so
    await col.update_one(
        {"_id": "wallet:USD:u1"},
        {"$setOnInsert": {"kind": "wallet", "balance": 0}, "$set": {"frozen": True}},
        upsert=True,
    )
    await col.update_one(
        {"_id": "wallet:USD:u2"},
        {"$setOnInsert": {"kind": "wallet", "balance": 0}, "$set": {"frozen": True}},
        upsert=True,
    )
    await col.update_one(
        {"_id": "wallet:USD:u2"}, {"$setOnInsert": fresh}, upsert=True
    )  # a late open
    docs = {d["_id"]: d async for d in col.find({})}
    # Read as truthiness: see the known difference below.
    assert docs["wallet:USD:u1"]["balance"] == 5 and bool(docs["wallet:USD:u1"]["frozen"])
    assert bool(docs["wallet:USD:u2"]["frozen"])


async def test_known_difference_booleans_set_on_an_existing_document(mongo_db, store_backend):
    """On the embedded server ``$set`` of ``True`` into an existing document stores ``1``
    (an insert keeps ``True``). The code reads flags by truthiness and never queries them."""
    col = mongo_db["flags"]
    await col.insert_one({"_id": "a", "flag": False})
    await col.update_one({"_id": "a"}, {"$set": {"flag": True}})
    flag = (await col.find_one({"_id": "a"}))["flag"]
    assert flag == (1 if store_backend == "embedded" else True) and bool(flag)


async def test_transfer_queries_by_ids_states_and_time(mongo_db):
    col = mongo_db["transfers"]
    now = utcnow()
    await col.insert_many(
        [
            {"_id": f"tr_{n}", "state": state, "created": stored_time(now - timedelta(seconds=age))}
            for n, (state, age) in enumerate(
                [("pending", 30), ("pending", 1), ("posted", 30), ("failed", 30)]
            )
        ]
    )
    final = await col.find(
        {"_id": {"$in": ["tr_0", "tr_2", "tr_3", "tr_9"]}, "state": {"$in": ["posted", "failed"]}}
    ).to_list()
    assert sorted(d["_id"] for d in final) == ["tr_2", "tr_3"]
    stale = await col.find(
        {"state": "pending", **time_range("created", before=now - timedelta(seconds=10))}, limit=10
    ).to_list()
    assert [d["_id"] for d in stale] == ["tr_0"]
    assert await col.count_documents({"state": "pending"}) == 2
    oldest = await col.find_one({"state": "pending"}, {"created": 1}, sort=[("created.unix_us", 1)])
    assert oldest["_id"] == "tr_0"
    changed = await col.update_one(
        {"_id": "tr_0", "state": "pending"},
        {"$set": {"state": "posted", "posted": stored_time(now)}},
    )
    assert changed.modified_count == 1
    assert (
        await col.update_one({"_id": "tr_0", "state": "pending"}, {"$set": {"state": "failed"}})
    ).modified_count == 0


async def test_record_claim_and_finish(mongo_db):
    col = mongo_db["offers"]
    await col.insert_one(
        {
            "_id": "of1",
            "status": "created",
            "moving": "",
            "refunded_seen": 0,
            "outbox": {},
            "outbox_pending": 0,
            "outbox_seq": 0,
        }
    )
    claim = {
        "$set": {
            "moving": "accept",
            "moving_since": stored_time(utcnow()),
            "transition": {"label": "accept", "transfers": [{"key": "k", "amount": 5}]},
        }
    }

    async def try_claim():
        return await col.find_one_and_update(
            {"refunded_seen": 0, "_id": "of1", "status": "created", "moving": ""},
            claim,
            return_document=ReturnDocument.AFTER,
        )

    winners = [doc for doc in await asyncio.gather(*(try_claim() for _ in range(8))) if doc]
    assert len(winners) == 1 and winners[0]["moving"] == "accept"
    assert winners[0]["transition"]["transfers"] == [{"key": "k", "amount": 5}]
    stale = await col.find(
        time_range("moving_since", before=utcnow() + timedelta(seconds=1))
    ).to_list()
    assert [d["_id"] for d in stale] == ["of1"]
    finish = {
        "$set": {
            "status": "accepted",
            "moving": "",
            "history.accept": {"status": "accepted", "at": stored_time(utcnow())},
            "outbox.e1": {"json": "{}"},
        },
        "$unset": {"transition": "", "moving_since": ""},
        "$inc": {"outbox_pending": 1, "outbox_seq": 1, "reversed": 5},
    }
    assert (await col.update_one({"_id": "of1", "moving": "accept"}, finish)).modified_count == 1
    assert (await col.update_one({"_id": "of1", "moving": "accept"}, finish)).modified_count == 0
    doc = await col.find_one({"_id": "of1"})
    assert doc["status"] == "accepted" and "transition" not in doc and "moving_since" not in doc
    assert (
        doc["outbox_pending"] == 1
        and doc["reversed"] == 5
        and doc["history"]["accept"]["status"] == "accepted"
    )
    assert (
        await col.count_documents(
            time_range("moving_since", before=utcnow() + timedelta(seconds=1))
        )
        == 0
    )


async def test_list_queries_and_the_held_sum(mongo_db):
    offers = mongo_db["offers"]
    await offers.insert_many(
        [
            {
                "_id": f"of_{n:03d}",
                "customer_id": "u1" if n % 2 else "u2",
                "status": "created" if n % 3 else "rejected",
            }
            for n in range(12)
        ]
    )
    page = (
        await offers.find(
            {
                "customer_id": "u1",
                "status": {"$in": ["created", "accepted"]},
                "_id": {"$lt": "of_009"},
            }
        )
        .sort("_id", -1)
        .limit(2)
        .to_list()
    )
    assert [d["_id"] for d in page] == ["of_007", "of_005"]
    entries = mongo_db["wallet_entries"]
    await entries.insert_many(
        [
            {"_id": f"wallet:USD:u1:{n:012d}", "account": "wallet:USD:u1", "seq": n}
            for n in range(1, 8)
        ]
    )
    newest = (
        await entries.find({"account": "wallet:USD:u1", "seq": {"$lt": 6}})
        .sort("seq", -1)
        .limit(3)
        .to_list()
    )
    assert [d["seq"] for d in newest] == [5, 4, 3]
    accounts = mongo_db["accounts"]
    await accounts.insert_many(
        [
            {"_id": "hold:USD:a", "owner": "u1", "currency": "USD", "kind": "hold", "balance": 105},
            {
                "_id": "escrow:USD:a",
                "owner": "u1",
                "currency": "USD",
                "kind": "escrow",
                "balance": 100,
            },
            {
                "_id": "wallet:USD:u1",
                "owner": "u1",
                "currency": "USD",
                "kind": "wallet",
                "balance": 7,
            },
            {"_id": "hold:EUR:b", "owner": "u1", "currency": "EUR", "kind": "hold", "balance": 9},
        ]
    )
    rows = await (
        await accounts.aggregate(
            [
                {"$match": {"owner": "u1", "currency": "USD", "kind": {"$in": ["hold", "escrow"]}}},
                {"$group": {"_id": None, "held": {"$sum": "$balance"}}},
            ]
        )
    ).to_list()
    assert rows[0]["held"] == 205


async def test_prune_control_lease_hold_epoch_and_batch(mongo_db):
    """PruneControl's shapes: a pass taken by one of many racers (returning the document as
    it was), refused while busy or held, its batch recorded and cleared under its epoch."""
    from payments_svc.adapters.maintenance import LeaseLost, PruneControl

    control = PruneControl(mongo_db, lease_seconds=30)
    await control.ensure()
    passes = [p for p in await asyncio.gather(*(control.begin_pass() for _ in range(5))) if p]
    assert passes == [(1, [])]
    assert await control.begin_pass() is None  # busy
    await control.record_batch(1, [T1, T2])
    await control.end_pass(1, finished=False)  # died half-way (the lease released early here)
    hold = await control.hold()
    assert await control.begin_pass() is None  # held by a check
    await control.release(hold)
    assert await control.begin_pass() == (2, [T1, T2])  # the next pass gets the batch to finish
    with pytest.raises(LeaseLost):
        await control.renew(1)
    await control.end_pass(2, finished=True)
    assert await control.quiet() == type(await control.quiet())(2, True)
    assert await control.begin_pass() == (3, [])


async def test_webhook_events_due_by_status_and_time(mongo_db):
    col = mongo_db["webhook_events"]
    now = utcnow()
    await col.insert_many(
        [
            {
                "_id": "evt_1",
                "status": "received",
                "retry_at": stored_time(now - timedelta(seconds=5)),
            },
            {
                "_id": "evt_2",
                "status": "received",
                "retry_at": stored_time(now + timedelta(seconds=60)),
            },
            {
                "_id": "evt_3",
                "status": "applied",
                "retry_at": stored_time(now - timedelta(seconds=5)),
            },
        ]
    )
    due = await col.find(
        {"status": "received", **time_range("retry_at", before=now)}, limit=10
    ).to_list()
    assert [d["_id"] for d in due] == ["evt_1"]


async def test_known_difference_floats_lose_digits(mongo_db, store_backend):
    """On the embedded server a float like ``time.time()`` comes back with fewer digits, so
    an equality guard on it misses. Guards compare integers (microseconds) instead."""
    col = mongo_db["floats"]
    value = 1795972163.2804017
    await col.insert_one({"_id": "f", "at": 0.0})
    await col.update_one({"_id": "f"}, {"$set": {"at": value}})
    matched = await col.count_documents({"_id": "f", "at": value})
    assert matched == (0 if store_backend == "embedded" else 1)
    assert abs((await col.find_one({"_id": "f"}))["at"] - value) < 1e-3


async def test_known_difference_unset_of_many_keys_at_once(mongo_db, store_backend):
    """On the embedded server an ``$unset`` of 128 or more keys changes nothing — while the
    ``$inc`` beside it is applied. The pruner unsets at most ``UNSET_CHUNK`` per update."""
    from payments_svc.adapters.maintenance import UNSET_CHUNK

    col = mongo_db["big_maps"]
    keys = [f"tr_{n:032d}" for n in range(200)]
    for count in (UNSET_CHUNK, 128):
        await col.replace_one(
            {"_id": "r"}, {"_id": "r", "applied": {k: {"a": 1} for k in keys}, "n": 0}, upsert=True
        )
        await col.update_one(
            {"_id": "r"}, {"$unset": {f"applied.{k}": "" for k in keys[:count]}, "$inc": {"n": 1}}
        )
        doc = await col.find_one({"_id": "r"})
        assert doc["n"] == 1
        removed = 200 - len(doc["applied"])
        if count == UNSET_CHUNK or store_backend != "embedded":
            assert removed == count
        else:
            assert removed == 0

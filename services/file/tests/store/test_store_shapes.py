"""The store shapes the file service relies on, pinned on the embedded server (and on a
real MongoDB where one is configured): usage ledger, records, grants."""

from __future__ import annotations

import asyncio

import pytest

from file_svc.adapters.usage import UsageLedger

pytestmark = pytest.mark.integration


async def test_usage_ledger_reserves_within_the_quota_and_releases_once(mongo_db) -> None:
    ledger = UsageLedger(mongo_db["file_usage"])
    assert await ledger.reserve("u", "f_1", 60, quota=100)
    assert await ledger.reserve("u", "f_1", 60, quota=100)  # repeated: still counted once
    assert await ledger.used("u") == 60
    assert not await ledger.reserve("u", "f_2", 41, quota=100)
    assert await ledger.reserve("u", "f_2", 40, quota=100)
    assert await ledger.used("u") == 100
    await ledger.release("u", "f_1")
    await ledger.release("u", "f_1")  # repeated: released once
    assert await ledger.used("u") == 40
    await ledger.release("u", "f_unknown")
    assert await ledger.used("u") == 40


async def test_usage_ledger_never_overshoots_under_concurrency(mongo_db) -> None:
    ledger = UsageLedger(mongo_db["file_usage"])
    results = await asyncio.gather(
        *(ledger.reserve("u", f"f_{n}", 10, quota=55) for n in range(20))
    )
    assert sum(results) == 5
    assert await ledger.used("u") == 50


async def test_known_difference_projection_of_a_dotted_path(mongo_db, store_backend) -> None:
    """Why the ledger reads its whole map: projecting ``files.<id>`` comes back nested on
    MongoDB but as a flat ``"files.<id>"`` key on the embedded store."""
    col = mongo_db["shapes"]
    await col.insert_one({"_id": "u", "files": {"f_1": 60, "f_2": 40}})
    projected = await col.find_one({"_id": "u"}, {"files.f_1": 1})
    if store_backend == "embedded":
        assert projected == {"_id": "u", "files.f_1": 60}
    else:
        assert projected == {"_id": "u", "files": {"f_1": 60}}
    whole = await col.find_one({"_id": "u"}, {"files": 1})
    assert whole == {"_id": "u", "files": {"f_1": 60, "f_2": 40}}


async def test_sparse_unique_index_on_an_optional_field(mongo_db) -> None:
    """Upload records carry ``idem`` (the Idempotency-Key) only sometimes: any number may
    lack it, no two may share one, and unsetting it frees the key."""
    from pymongo.errors import DuplicateKeyError

    from file_svc.adapters.records import COLLECTION, record_indexes
    from switchyard.mongo import ensure_indexes

    await ensure_indexes(mongo_db, record_indexes())
    col = mongo_db[COLLECTION]
    await col.insert_many([{"_id": "a"}, {"_id": "b"}, {"_id": "c", "idem": "u:k"}])
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"_id": "d", "idem": "u:k"})
    await col.update_one({"_id": "c"}, {"$unset": {"idem": ""}})
    await col.insert_one({"_id": "d", "idem": "u:k"})
    assert (await col.find_one({"idem": "u:k"}))["_id"] == "d"


async def test_a_revoked_message_keeps_no_grant_whatever_the_order(mongo_db) -> None:
    """``chat.message.deleted`` before, after or while its ``sent`` is handled: no grant
    of the message remains (single-document writes only, in the order grants.py gives)."""
    from file_svc.adapters.grants import Grants
    from switchyard.envelope import utcnow

    grants = Grants(mongo_db["file_grants"], mongo_db["file_revoked_messages"])
    now = utcnow()
    await grants.revoke_message("m-first", now=now)
    await grants.grant(message_id="m-first", file_id="f_1", user_ids=["u1", "u2"], now=now)
    assert not await grants.may_read("f_1", "u1")
    for n in range(20):
        message = f"m-race-{n}"
        await asyncio.gather(
            grants.grant(message_id=message, file_id="f_2", user_ids=["u1", "u2"], now=now),
            grants.revoke_message(message, now=now),
        )
        assert await grants.collection.count_documents({"message_id": message}) == 0, n
    await grants.grant(message_id="m-kept", file_id="f_3", user_ids=["u1"], now=now)
    assert await grants.may_read("f_3", "u1")

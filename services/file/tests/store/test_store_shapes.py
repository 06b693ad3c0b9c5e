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

"""A pruning pass whose selection read an account while a transfer on it was in flight
(debited, not yet credited) and which then found that transfer posted: the pass must
prune the transfer on both sides or on neither — the ledger check counts an entry seen
on one side only as money in flight, so a transfer pruned on its debit side alone reads
as an imbalance (consistent, not balanced) until the next pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payments_svc.adapters.ledger import APPLIED, Ledger, ledger_indexes
from payments_svc.adapters.maintenance import LedgerCheck, PruneControl, Pruner
from payments_svc.domain import accounts as acct
from payments_svc.domain.accounts import AccountSpec, TransferSpec
from switchyard.mongo import ensure_indexes

pytestmark = pytest.mark.integration

USD = "USD"


class _PostsFirst:
    """The pruner's transfers collection, except that its first ``find`` lets the paused
    transfer finish before it reads (so the accounts were read while it was in flight)."""

    def __init__(self, collection: Any, before: Any) -> None:
        self.collection, self.before = collection, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        outer = self

        class _Cursor:
            async def to_list(self) -> list[Any]:
                if outer.before is not None:
                    before, outer.before = outer.before, None
                    await before()
                return await outer.collection.find(*args, **kwargs).to_list()

        return _Cursor()


async def test_a_transfer_in_flight_when_the_pass_read_its_accounts_is_pruned_on_both_sides(
    mongo_db,
):
    await ensure_indexes(mongo_db, ledger_indexes())
    control = PruneControl(mongo_db)
    await control.ensure()
    world = AccountSpec(acct.platform("world", USD))
    wallet = AccountSpec(acct.wallet(USD, "u1"), owner="u1")
    # An earlier posted transfer: both accounts have an entry, so the selection reads both.
    assert (
        await Ledger(mongo_db).execute(TransferSpec("dep:0", world, wallet, 100, "deposit"))
    ).state == "posted"
    spec = TransferSpec("dep:1", world, wallet, 250, "deposit")
    debited, go_on = asyncio.Event(), asyncio.Event()

    async def pause(step: str, tid: str) -> None:
        if step == "debited" and tid == spec.id:
            debited.set()
            await go_on.wait()

    running = asyncio.create_task(Ledger(mongo_db, observer=pause).execute(spec))
    await debited.wait()

    async def finish() -> None:
        go_on.set()
        assert (await running).state == "posted"

    pruner = Pruner(mongo_db, control)
    pruner.transfers = _PostsFirst(pruner.transfers, finish)  # type: ignore[assignment]
    await pruner.prune()
    sides = {
        doc["_id"]: spec.id in (doc.get(APPLIED) or {})
        async for doc in mongo_db["accounts"].find({})
    }
    assert len(set(sides.values())) == 1, sides  # pruned on both sides or on neither
    report = await LedgerCheck(mongo_db, control).run()
    assert report.consistent and report.balanced, report.json()
    assert report.total == 0 and report.pending_transfers == 0

"""The ledger on the embedded store: transfers, guards, refusals, pruning, the check."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.adapters.ledger import ACCOUNTS, Ledger, ledger_indexes
from payments_svc.adapters.maintenance import LedgerCheck, PruneControl, Pruner
from payments_svc.domain import accounts as acct
from payments_svc.domain.accounts import AccountSpec, TransferSpec
from switchyard.mongo import ensure_indexes

pytestmark = pytest.mark.integration

USD = "USD"


def world() -> AccountSpec:
    return AccountSpec(acct.platform("world", USD))


def wallet(user: str) -> AccountSpec:
    return AccountSpec(acct.wallet(USD, user), owner=user)


def deposit(user: str, amount: int, key: str) -> TransferSpec:
    return TransferSpec(key, world(), wallet(user), amount, "deposit")


@pytest.fixture
async def ledger(mongo_db) -> Ledger:
    await ensure_indexes(mongo_db, ledger_indexes())
    return Ledger(mongo_db)


@pytest.fixture
async def control(mongo_db) -> PruneControl:
    control = PruneControl(mongo_db)
    await control.ensure()
    return control


async def test_a_transfer_moves_money_once_whatever_the_retries(ledger, control, mongo_db):
    spec = deposit("u1", 700, "dep:1")
    results = await asyncio.gather(*(ledger.execute(spec) for _ in range(8)))
    assert {r.state for r in results} == {"posted"}
    assert await ledger.balance(acct.wallet(USD, "u1")) == 700
    assert await ledger.balance(acct.platform("world", USD)) == -700
    assert (await ledger.execute(spec)).state == "posted"  # again, later: nothing moves
    assert await ledger.balance(acct.wallet(USD, "u1")) == 700
    report = await LedgerCheck(mongo_db, control).run()
    assert report.balanced and report.total == 0 and report.pending_transfers == 0


async def test_a_short_wallet_refuses_and_the_credit_never_happens(ledger, control, mongo_db):
    await ledger.execute(deposit("u1", 100, "dep:1"))
    offer = AccountSpec(acct.hold(USD, "of1"), owner="u1")
    spec = TransferSpec("offer:of1:hold", wallet("u1"), offer, 101, "offer_hold")
    assert (await ledger.execute(spec)).state == "failed"
    # Money arriving afterwards does not revive a refused transfer.
    await ledger.execute(deposit("u1", 50, "dep:2"))
    assert (await ledger.execute(spec)).state == "failed"
    assert await ledger.balance(acct.wallet(USD, "u1")) == 150
    assert await ledger.balance(offer.id) == 0
    report = await LedgerCheck(mongo_db, control).run()
    assert report.balanced and report.total == 0


async def test_concurrent_debits_never_overdraw(ledger, mongo_db):
    await ledger.execute(deposit("u1", 1000, "dep:1"))
    specs = [
        TransferSpec(
            f"offer:of{n}:hold",
            wallet("u1"),
            AccountSpec(acct.hold(USD, f"of{n}"), owner="u1"),
            150,
            "offer_hold",
        )
        for n in range(20)
    ]
    results = await asyncio.gather(*(ledger.execute(spec) for spec in specs))
    posted = [r for r in results if r.state == "posted"]
    assert len(posted) == 6
    assert await ledger.balance(acct.wallet(USD, "u1")) == 100


async def test_pruning_keeps_balances_and_history(ledger, control, mongo_db):
    for n in range(5):
        await ledger.execute(deposit("u1", 10 + n, f"dep:{n}"))
    pruner = Pruner(mongo_db, control)
    assert await pruner.prune() == 10  # five transfers, two sides each
    doc = await mongo_db[ACCOUNTS].find_one({"_id": acct.wallet(USD, "u1")})
    assert doc["applied"] == {} and doc["entries"] == 0 and doc["pruned"] == 1
    assert doc["balance"] == 60 and doc["seq"] == 5
    history = await mongo_db["wallet_entries"].find({}).sort("seq", 1).to_list()
    assert [h["after"] for h in history] == [10, 21, 33, 46, 60]
    # A late executor of a pruned transfer moves nothing.
    assert (await ledger.execute(deposit("u1", 10, "dep:0"))).state == "posted"
    assert await ledger.balance(acct.wallet(USD, "u1")) == 60
    report = await LedgerCheck(mongo_db, control).run()
    assert report.balanced and report.total == 0


@pytest.mark.parametrize("warm", [False, True], ids=["read", "remembered"])
@pytest.mark.parametrize("pause_at", ["inserted", "debited", "credited"])
async def test_a_stalled_executor_never_applies_after_another_posted_and_pruned(
    mongo_db, control, pause_at, warm
):
    """Executor A stalls at ``pause_at``; meanwhile B finishes the same transfer and the
    pruner removes its entries. A wakes up and must move nothing more — whether A read
    its snapshot of the wallet or took what it remembered of it from an earlier transfer
    (``remembered``: A's own deposit before)."""
    await ensure_indexes(mongo_db, ledger_indexes())
    other = Ledger(mongo_db)
    pruner = Pruner(mongo_db, control)
    await other.execute(deposit("u1", 1_000, "dep:0"))
    spec = TransferSpec(
        "offer:of1:hold",
        wallet("u1"),
        AccountSpec(acct.hold(USD, "of1"), owner="u1"),
        400,
        "offer_hold",
    )
    paused = []

    async def stall(step: str, tid: str) -> None:
        if step == pause_at and tid == spec.id and not paused:
            paused.append(step)
            assert (await other.execute(spec)).state == "posted"
            assert await pruner.prune() >= 2

    stalled = Ledger(mongo_db, observer=stall)
    start = 1_000
    if warm:
        assert (await stalled.execute(deposit("u1", 5, "dep:warm"))).state == "posted"
        start += 5
    assert (await stalled.execute(spec)).state == "posted"
    assert paused == [pause_at]
    assert await stalled.balance(acct.wallet(USD, "u1")) == start - 400
    assert await stalled.balance(acct.hold(USD, "of1")) == 400
    report = await LedgerCheck(mongo_db, control).run()
    assert report.balanced and report.total == 0


async def test_a_debit_whose_result_was_lost_is_not_applied_again(mongo_db, control):
    """The store applied the debit but the executor never heard back (a dropped connection):
    the next executor finds the entry and carries on from there."""
    from pymongo.errors import AutoReconnect

    ledger = Ledger(mongo_db)
    await ledger.execute(deposit("u1", 500, "dep:0"))
    real_update = ledger.accounts.update_one
    calls = []

    async def lossy_update(*args, **kwargs):
        result = await real_update(*args, **kwargs)
        if not calls and args[0]["_id"] == acct.wallet(USD, "u1"):
            calls.append(args)
            raise AutoReconnect("connection closed after the write")
        return result

    ledger.accounts.update_one = lossy_update  # type: ignore[method-assign]
    spec = TransferSpec(
        "w:1", wallet("u1"), AccountSpec(acct.platform("payout", USD)), 200, "withdrawal"
    )
    with pytest.raises(AutoReconnect):
        await ledger.execute(spec)
    assert await ledger.balance(acct.wallet(USD, "u1")) == 300  # applied, unheard
    assert (await Ledger(mongo_db).execute(spec)).state == "posted"
    assert await ledger.balance(acct.wallet(USD, "u1")) == 300
    assert await ledger.balance(acct.platform("payout", USD)) == 200
    report = await LedgerCheck(mongo_db, control).run()
    assert report.balanced and report.total == 0


async def test_a_partial_pruning_pass_never_leaves_a_transfer_pruned_on_one_side(
    ledger, control, mongo_db
):
    """A pass picks a few accounts; it still prunes both sides of each final transfer it
    finds, so the check between passes never mistakes a settled transfer for money in flight."""
    for n in range(6):
        await ledger.execute(deposit(f"u{n}", 100 + n, f"dep:{n}"))
    pruner = Pruner(mongo_db, control)
    check = LedgerCheck(mongo_db, control)
    while await pruner.prune(limit=1):
        report = await check.run()
        assert report.consistent and report.balanced, report.json()
    accounts = await mongo_db[ACCOUNTS].find({}).to_list()
    assert all(a["entries"] == 0 for a in accounts)


async def test_a_pass_that_dies_half_way_is_finished_by_the_next(ledger, mongo_db):
    """Killed after pruning one side of a transfer: the check refuses to vouch for its
    snapshot until the next pass has finished the dead pass's batch."""
    control = PruneControl(mongo_db, lease_seconds=0.3)
    await control.ensure()
    await ledger.execute(deposit("u1", 100, "dep:1"))
    dying = Pruner(mongo_db, control)
    real_update = dying.accounts.update_one
    calls = 0

    async def die_on_second(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionResetError("process gone")
        return await real_update(*args, **kwargs)

    dying.accounts.update_one = die_on_second  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        await dying.prune()
    check = LedgerCheck(mongo_db, control)
    report = await check.run(attempts=1)
    assert not report.consistent  # one side pruned, the other not: no false alarm, no vouching
    report = await LedgerCheck(mongo_db, control, Pruner(mongo_db, control)).run()
    assert report.consistent and report.balanced and report.total == 0, report.json()
    assert await mongo_db[ACCOUNTS].count_documents({"entries": {"$gt": 0}}) == 0


async def test_pruning_a_hot_account_with_hundreds_of_entries(ledger, control, mongo_db):
    """The world account collects an entry per deposit; a pass removes hundreds of them
    (in chunks the embedded store really applies) and the books stay exact."""
    await asyncio.gather(
        *(ledger.execute(deposit(f"u{n % 7}", 1 + n, f"dep:{n}")) for n in range(300))
    )
    assert await Pruner(mongo_db, control).prune(limit=500) == 600
    world_doc = await mongo_db[ACCOUNTS].find_one({"_id": acct.platform("world", USD)})
    assert world_doc["applied"] == {} and world_doc["entries"] == 0
    report = await LedgerCheck(mongo_db, control).run()
    assert report.consistent and report.balanced and report.total == 0
    assert await mongo_db[ACCOUNTS].count_documents({"entries": {"$gt": 0}}) == 0

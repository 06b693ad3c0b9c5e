"""Withdrawals of one wallet requested through two replicas at once while both replicas'
sweepers retry every payout and drive every claimed transition the moment they exist
(a stale-after of 0) — the request and two sweepers pay each one out side by side. Each
request answers its final outcome, each withdrawal moves its money out exactly once, and
the wallet never goes below zero."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from payments_svc.adapters.ledger import ledger_indexes
from payments_svc.adapters.maintenance import LedgerCheck, PruneControl, Pruner
from payments_svc.domain import accounts as acct
from payments_svc.domain.money import Money
from payments_svc.handlers import wallets
from payments_svc.sweeper import Sweeper
from switchyard.directory import UserDirectory
from switchyard.envelope import utcnow
from switchyard.mongo import ensure_indexes
from switchyard.problems import Problem

from ..support import identity, offline_books

pytestmark = pytest.mark.integration

FUNDS = 60_000


async def test_withdrawals_raced_by_two_replicas_and_their_sweepers_pay_out_once(mongo_db):
    await ensure_indexes(mongo_db, ledger_indexes())
    control = PruneControl(mongo_db)
    await control.ensure()
    replicas = [offline_books(mongo_db) for _ in range(2)]
    # The first payout call of a withdrawal waits for a second one (a sweeper's retry, in
    # either replica) so that every payout is raced; both then reach the provider.
    arrived: dict[str, asyncio.Event] = {}
    raced = [0]
    for books in replicas:
        real = books.provider.pay_out

        async def pay_out(*, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            wid = kwargs["withdrawal_id"]
            if wid in arrived:
                raced[0] += 1
                arrived[wid].set()
            else:
                first = arrived[wid] = asyncio.Event()
                # Generous: one sweeper pass on a loaded box (alone, it goes on after it).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(first.wait(), 10)
            return await _real(**kwargs)

        books.provider.pay_out = pay_out  # type: ignore[method-assign]
    sweepers = [
        Sweeper(books, Pruner(mongo_db, control), LedgerCheck(mongo_db, control))
        for books in replicas
    ]
    user = "wd-racer"
    await UserDirectory(mongo_db["payments_users"]).record_profile(
        user, email="w@example.com", display_name="w", roles=["customer"], as_of=utcnow()
    )
    await wallets.deposit(identity(user), Money(FUNDS, "USD"), books=replicas[0])
    stop = asyncio.Event()
    swept = [0]

    async def sweep(sweeper: Sweeper) -> None:
        while not stop.is_set():
            swept[0] += await sweeper.retry_payouts(after=0)
            await sweeper.books.withdrawals.sweep(after=0)
            await sweeper.stale.sweep(after=0)
            await sweeper.pruner.prune()
            await asyncio.sleep(0)

    rng = random.Random(31)

    async def withdraw(n: int) -> int:
        amount = rng.randint(1, 3_000)
        books = replicas[n % 2]
        try:
            done = await wallets.withdraw(identity(user), Money(amount, "USD"), books=books)
        except Problem as problem:
            assert problem.status == 422, problem
            return 0
        assert done["status"] == "completed", done
        return amount

    sweeping = [asyncio.create_task(sweep(s)) for s in sweepers]
    try:
        answered = await asyncio.gather(*(withdraw(n) for n in range(60)))
    finally:
        stop.set()
        await asyncio.gather(*sweeping)
    out = sum(answered)
    assert 0 in answered and out > 0  # the wallet ran dry on the way
    assert swept[0] > 0 and raced[0] > 0, (swept, raced)  # the sweepers raced the requests
    print("withdrawal race:", len(answered), "requests,", raced[0], "payouts raced")
    ledger = replicas[0].ledger
    assert await ledger.balance(acct.wallet("USD", user)) == FUNDS - out
    assert await ledger.balance("payout:USD") == 0
    assert await ledger.balance("world:USD") == out - FUNDS
    completed = await replicas[0].withdrawals.collection.find({"status": "completed"}).to_list()
    assert sum(w["amount"] for w in completed) == out
    payouts = await ledger.transfers.count_documents(
        {"kind": "withdrawal_payout", "state": "posted"}
    )
    assert payouts == len(completed)
    report = await LedgerCheck(mongo_db, control).run()
    assert report.consistent and report.balanced and report.pending_transfers == 0, report.json()

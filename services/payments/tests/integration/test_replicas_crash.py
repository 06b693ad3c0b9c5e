"""Two real service processes (replicas) on one store, with offers, accepts, completions,
cancellations and withdrawals of the same customers sent to either at random, while one
replica or the other is SIGKILLed at random times and started again. Each replica
remembers the accounts it last read or wrote, so the other's writes keep making what it
remembers stale; both sweepers and pruners race both executors. Once everything has
settled every offer's and withdrawal's money is exactly where its final status says,
the books add up from the transfers and the wallet histories, and the check balances."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp
import pytest

from payments_svc.adapters.ledger import Ledger
from payments_svc.adapters.maintenance import CONTROL, LedgerCheck, PruneControl, Pruner
from payments_svc.domain import accounts as acct

from ..support import eventually
from .test_service_crash import ServiceProcess, process_env, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KILLS = 2
DEPOSIT = 400_000


async def test_two_replicas_killed_in_turn_move_every_cent_once(
    settings_overrides, jwks_server, mongo_db, tmp_path, broker_cleanup
):
    replicas = [
        ServiceProcess(
            process_env(settings_overrides, jwks_server, LEDGER_STALE_AFTER="0.5"),
            tmp_path / f"payments-{n}.log",
        )
        for n in range(2)
    ]
    await asyncio.gather(*(replica.start() for replica in replicas))
    customers = [f"cus{n}" for n in range(2)]
    contractor = "con0"
    await register(
        settings_overrides,
        mongo_db,
        {**{c: ["customer"] for c in customers}, contractor: ["contractor"]},
    )
    rng = random.Random(23)
    outcomes: Counter[str] = Counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def call(
                method: str, path: str, uid: str, roles: tuple[str, ...], body: Any = None
            ) -> Any:
                replica = rng.choice(replicas)
                headers = {"Authorization": f"Bearer {jwks_server.token(uid, roles)}"}
                try:
                    async with http.request(
                        method, replica.url + "/api/v1/payments" + path, json=body, headers=headers
                    ) as r:
                        payload = await r.json(content_type=None)
                        outcomes[f"{method} {path.split('/')[-1][:8]} {r.status}"] += 1
                        if r.status in (200, 201) and path in ("/offers", "/withdrawals"):
                            return payload["id"]
                        return r.status
                except (aiohttp.ClientError, TimeoutError):
                    outcomes["cut"] += 1
                    await asyncio.sleep(0.05)  # that replica is down: not a busy loop
                    return -1

            for customer in customers:
                body = {"amount": {"amount": DEPOSIT, "currency": "USD"}}
                assert await call("POST", "/deposits", customer, ("customer",), body) == 201

            async def flows(customer: str, stop: asyncio.Event) -> None:
                while not stop.is_set():
                    budget = rng.randint(1, 9_000)
                    if rng.random() < 0.25:
                        body = {"amount": {"amount": budget, "currency": "USD"}}
                        await call("POST", "/withdrawals", customer, ("customer",), body)
                        continue
                    offer = await call(
                        "POST",
                        "/offers",
                        customer,
                        ("customer",),
                        {
                            "contractor_id": contractor,
                            "job_id": "j",
                            "budget": {"amount": budget, "currency": "USD"},
                        },
                    )
                    if not isinstance(offer, str):
                        await asyncio.sleep(0.05)
                        continue
                    path = f"/offers/{offer}"
                    if rng.random() < 0.2:
                        await call("POST", path + "/cancel", customer, ("customer",))
                        continue
                    # Both replicas at once for each transition, often.
                    await asyncio.gather(
                        call("POST", path + "/accept", contractor, ("contractor",)),
                        call("POST", path + "/accept", contractor, ("contractor",)),
                    )
                    await asyncio.gather(
                        call("POST", path + "/complete", customer, ("customer",)),
                        call("POST", path + "/complete", customer, ("customer",)),
                    )

            # The load goes on throughout: while one replica restarts, the other serves.
            stop = asyncio.Event()
            clients = [asyncio.create_task(flows(c, stop)) for c in customers]
            for kill in range(KILLS):
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                victim = replicas[kill % 2]
                victim.kill()
                await victim.start()
            stop.set()
            await asyncio.gather(*clients)

        offers, accounts = mongo_db["offers"], mongo_db["accounts"]
        withdrawals = mongo_db["withdrawals"]

        async def settled() -> bool:
            moving = await offers.count_documents({"moving": {"$ne": ""}})
            moving += await withdrawals.count_documents(
                {"$or": [{"moving": {"$ne": ""}}, {"status": "requested"}]}
            )
            pending = await mongo_db["transfers"].count_documents({"state": "pending"})
            return moving == 0 and pending == 0

        await eventually(settled, timeout=60)
    finally:
        for replica in replicas:
            replica.stop()
    assert outcomes["cut"] >= 1, outcomes  # the kills really cut requests off
    # Both replicas are stopped: a pruning pass a kill cut off holds a lease nobody
    # renews; end it so the last passes run now instead of after the lease.
    await mongo_db[CONTROL].update_one({"_id": "pruning"}, {"$set": {"busy_until": 0}})
    control = PruneControl(mongo_db)
    pruner = Pruner(mongo_db, control)
    while await pruner.prune():
        pass
    report = await LedgerCheck(mongo_db, control, pruner).run()
    assert report.consistent and report.balanced, report.json()
    assert report.negative_wallets == [] and report.pending_transfers == 0, report.json()

    books = {a["_id"]: a["balance"] for a in await accounts.find({}).to_list()}
    all_offers = await offers.find({}).to_list()
    by_status = Counter(o["status"] for o in all_offers)
    assert set(by_status) <= {"created", "accepted", "completed", "cancelled", "rejected"}
    revenue = payouts = 0
    spent = dict.fromkeys(customers, 0)
    for o in all_offers:
        b, f, s, p, status = (
            o["budget"],
            o["platform_fee"],
            o["service_fee"],
            o["payout"],
            o["status"],
        )
        assert books.get(acct.hold("USD", o["_id"]), 0) == (b + f if status == "created" else 0), o
        assert books.get(acct.escrow("USD", o["_id"]), 0) == (b if status == "accepted" else 0), o
        if status in ("created", "accepted", "completed"):
            spent[o["customer_id"]] += b + f
        if status in ("accepted", "completed"):
            revenue += f
        if status == "completed":
            revenue += s
            payouts += p
    paid_out = 0
    all_withdrawals = await withdrawals.find({}).to_list()
    assert {w["status"] for w in all_withdrawals} <= {"completed", "rejected"}
    for w in all_withdrawals:
        if w["status"] == "completed":
            spent[w["user_id"]] += w["amount"]
            paid_out += w["amount"]
    assert books["revenue:USD"] == revenue
    assert books.get("payout:USD", 0) == 0
    assert books["world:USD"] == paid_out - DEPOSIT * len(customers)
    assert books[acct.wallet("USD", contractor)] == payouts
    for customer in customers:
        assert books[acct.wallet("USD", customer)] == DEPOSIT - spent[customer]
    assert sum(books.values()) == 0
    assert by_status["completed"] >= 1 and paid_out > 0, (by_status, outcomes)
    await _books_add_up(Ledger(mongo_db))
    print("replica crash attack:", sum(outcomes.values()), "requests", dict(outcomes))


async def _books_add_up(ledger: Ledger) -> None:
    """Every account equals the sum of its posted transfers; every wallet's history runs
    1..n with exact running balances ending at its balance."""
    sums: dict[str, int] = {}
    async for transfer in ledger.transfers.find({"state": "posted"}):
        sums[transfer["debit"]] = sums.get(transfer["debit"], 0) - transfer["amount"]
        sums[transfer["credit"]] = sums.get(transfer["credit"], 0) + transfer["amount"]
    async for account in ledger.accounts.find({}):
        assert sums.get(account["_id"], 0) == account["balance"], account["_id"]
        if account["kind"] != "wallet":
            continue
        running = seq = 0
        async for entry in ledger.entries.find({"account": account["_id"]}).sort("seq", 1):
            seq, running = seq + 1, running + entry["amount"]
            assert (entry["seq"], entry["after"]) == (seq, running), entry
        assert running == account["balance"], account["_id"]

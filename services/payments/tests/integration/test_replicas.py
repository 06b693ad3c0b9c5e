"""Two replicas of the service on one store (an outside attack on the remembered snapshots):
each process remembers the accounts it last read or wrote, so under the other's writes
what it remembers goes stale. Deposits, withdrawals, offers and their transitions hit
the same wallets through both replicas at once, with both sweepers taking over at once
(LEDGER_STALE_AFTER of a millisecond, so each one's pruner races both executors). After
the run the books are recomputed from the transfers and the wallet histories."""

from __future__ import annotations

import asyncio
import random

import pytest

from payments_svc import keys

from ..support import RunningService

pytestmark = pytest.mark.integration


async def test_two_replicas_on_one_store_move_every_cent_once(start_service):
    fast = {"ledger_stale_after": 0.001, "ledger_sweep_interval": 0.005}
    one, two = await start_service(**fast), await start_service(**fast)
    replicas = (one, two)
    customers = [await one.user("customer") for _ in range(2)]
    contractors = [await one.user("contractor") for _ in range(2)]
    admin = await one.user("admin")
    rng = random.Random(20)
    # What came in from the world and went back out to it, as the clients were answered.
    outside = {"in": 0, "out": 0, "withdrawals": 0}

    def pick() -> RunningService:
        return rng.choice(replicas)

    async def deposit(user: str) -> None:
        amount = rng.randint(1, 5_000)
        response = await pick().call(
            "POST",
            "/deposits",
            token=one.token(user),
            json_body={"amount": {"amount": amount, "currency": "USD"}},
        )
        assert response.status == 201, response.body
        outside["in"] += amount

    async def withdraw(user: str) -> None:
        amount = rng.randint(1, 4_000)
        response = await pick().call(
            "POST",
            "/withdrawals",
            token=one.token(user),
            json_body={"amount": {"amount": amount, "currency": "USD"}},
        )
        assert response.status in (201, 422), response.body
        if response.status == 201:
            assert response.body["status"] == "completed", response.body
            outside["out"] += amount
            outside["withdrawals"] += 1

    async def offer(customer: str) -> None:
        contractor, budget = rng.choice(contractors), rng.randint(1, 3_000)
        made = await pick().call(
            "POST",
            "/offers",
            token=one.token(customer),
            json_body={
                "contractor_id": contractor,
                "job_id": "j",
                "budget": {"amount": budget, "currency": "USD"},
            },
        )
        assert made.status in (201, 422), made.body
        if made.status == 422:
            return
        path = f"/offers/{made.body['id']}"
        as_contractor = one.token(contractor, "contractor")
        # Both replicas race for the first transition, then for the last.
        first = await asyncio.gather(
            one.call("POST", path + "/accept", token=as_contractor),
            two.call("POST", path + "/accept", token=as_contractor),
            pick().call("POST", path + "/cancel", token=one.token(customer)),
        )
        assert sorted(r.status for r in first) == [200, 409, 409], [r.body for r in first]
        if first[2].status == 200:
            return
        last = await asyncio.gather(
            one.call("POST", path + "/complete", token=one.token(customer)),
            two.call("POST", path + "/complete", token=one.token(customer)),
            pick().call("POST", path + "/refund", token=one.token(admin, "admin")),
        )
        assert sorted(r.status for r in last) == [200, 409, 409], [r.body for r in last]

    async def load(customer: str) -> None:
        for _ in range(12):
            action = rng.random()
            if action < 0.3:
                await asyncio.gather(deposit(customer), withdraw(customer), offer(customer))
            elif action < 0.6:
                await asyncio.gather(offer(customer), offer(customer), withdraw(customer))
            else:
                await asyncio.gather(
                    deposit(customer), withdraw(rng.choice(contractors)), offer(customer)
                )

    for customer in customers:
        await deposit(customer)
    await asyncio.gather(*(load(c) for c in customers))
    for replica in replicas:
        await replica.app[keys.SWEEPER].sweep_once()
    world = await one.balance("world:USD")
    assert world == outside["out"] - outside["in"], outside
    paid = await one.books.withdrawals.collection.count_documents({"status": "completed"})
    assert paid == outside["withdrawals"]
    await one.assert_balanced()
    await two.assert_books_add_up()

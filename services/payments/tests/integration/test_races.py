"""Races an adversarial review ran against the service and that hold: one wallet spent by
offers, withdrawals and admin debits at once (through the gateway); transitions racing
for one offer; a sweeper that takes over every transfer and transition the moment it
starts. After each, the books are recomputed from the transfers and the wallet histories."""

from __future__ import annotations

import asyncio
import random

import pytest

from payments_svc.domain.money import fee

from .test_rules import offer as make_offer

pytestmark = pytest.mark.integration


async def test_one_wallet_spent_by_offers_withdrawals_and_admin_debits_at_once(service, gateway):
    via = await gateway(service)
    customer, admin = await service.user("customer"), await service.user("admin")
    contractors = [await service.user("contractor") for _ in range(3)]
    await service.fund(customer, 50_000)
    rng = random.Random(14)

    async def spend(n: int) -> tuple[str, int, int]:
        amount, pick = rng.randint(1, 4_000), n % 3
        if pick == 0:
            body = {
                "contractor_id": rng.choice(contractors),
                "job_id": f"j{n}",
                "budget": {"amount": amount, "currency": "USD"},
            }
            response = await service.call(
                "POST", "/offers", token=service.token(customer), json_body=body, base=via
            )
            return "offer", response.status, amount + fee(amount, 500)
        if pick == 1:
            body = {"amount": {"amount": amount, "currency": "USD"}}
            response = await service.call(
                "POST", "/withdrawals", token=service.token(customer), json_body=body, base=via
            )
            return "withdrawal", response.status, amount
        body = {
            "user_id": customer,
            "direction": "debit",
            "reason": "race test",
            "amount": {"amount": amount, "currency": "USD"},
        }
        response = await service.call(
            "POST",
            "/admin/adjustments",
            token=service.token(admin, "admin"),
            json_body=body,
            base=via,
        )
        return "adjustment", response.status, amount

    results = await asyncio.gather(*(spend(n) for n in range(60)))
    assert {status for _, status, _ in results} <= {201, 422}, results
    spent = sum(amount for _, status, amount in results if status == 201)
    assert any(status == 422 for _, status, _ in results)  # the wallet ran dry on the way
    wallet = await service.wallet(customer)
    assert wallet["available"] == 50_000 - spent >= 0
    await service.assert_balanced()
    await service.assert_books_add_up()


async def test_racing_transitions_of_one_offer_have_exactly_one_winner(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    admin = await service.user("admin")
    await service.fund(customer, 100_000)
    as_customer, as_contractor = service.token(customer), service.token(contractor, "contractor")
    as_admin = service.token(admin, "admin")
    for n in range(8):
        offer = f"/offers/{(await make_offer(service, customer, contractor, 1_001 + n))['id']}"
        first = await asyncio.gather(
            service.call("POST", offer + "/accept", token=as_contractor),
            service.call("POST", offer + "/accept", token=as_contractor),
            service.call("POST", offer + "/cancel", token=as_customer),
            service.call("POST", offer + "/cancel", token=as_contractor),
        )
        assert sorted(r.status for r in first) == [200, 409, 409, 409], [r.body for r in first]
        if first[0].status == 200 or first[1].status == 200:
            second = await asyncio.gather(
                service.call("POST", offer + "/complete", token=as_customer),
                service.call("POST", offer + "/refund", token=as_admin),
                service.call("POST", offer + "/cancel", token=as_admin),  # an admin's refund
            )
            assert sorted(r.status for r in second) == [200, 409, 409], [r.body for r in second]
            for loser in (r for r in second if r.status == 409):
                assert loser.body["current_status"] in ("accepted", "completed", "refunded")
    await service.assert_balanced()
    await service.assert_books_add_up()


async def test_a_sweeper_that_takes_over_at_once_races_every_request(start_service):
    """LEDGER_STALE_AFTER of a millisecond: the sweeper drives every transfer and every
    record's transition side by side with the request that started it."""
    service = await start_service(ledger_stale_after=0.001, ledger_sweep_interval=0.005)
    customers = [await service.user("customer") for _ in range(3)]
    contractors = [await service.user("contractor") for _ in range(2)]
    admin = await service.user("admin")
    for customer in customers:
        await service.fund(customer, 200_000)
    rng = random.Random(5)

    async def flows(customer: str) -> None:
        token = service.token(customer)
        for _ in range(10):
            contractor = rng.choice(contractors)
            made = await make_offer(service, customer, contractor, rng.randint(1, 9_000))
            offer, pick = f"/offers/{made['id']}", rng.random()
            if pick < 0.3:
                assert (await service.call("POST", offer + "/cancel", token=token)).status == 200
            else:
                accept = await service.call(
                    "POST", offer + "/accept", token=service.token(contractor, "contractor")
                )
                assert accept.status == 200, accept.body
                last = (
                    await service.call("POST", offer + "/complete", token=token)
                    if pick < 0.65
                    else await service.call(
                        "POST", offer + "/refund", token=service.token(admin, "admin")
                    )
                )
                assert last.status == 200, last.body
            out = await service.call(
                "POST",
                "/withdrawals",
                token=token,
                json_body={"amount": {"amount": rng.randint(1, 3_000), "currency": "USD"}},
            )
            assert out.status == 201 and out.body["status"] == "completed", out.body

    await asyncio.gather(*(flows(c) for c in customers))
    recovered = {
        what: service.books.metrics.value("payments_sweeper_recovered_total", what=what)
        for what in ("transfer", "offer", "deposit", "withdrawal")
    }
    assert sum(recovered.values()) > 0, recovered  # the sweeper really took part
    await service.assert_balanced()
    await service.assert_books_add_up()

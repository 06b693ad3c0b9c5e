"""The money flow with exact cents (B = 10,001), through the real gateway: Σ = 0 and no
negative wallet after every step, one event per transition with DESIGN §3.1's amounts."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.domain import accounts as acct

pytestmark = pytest.mark.integration

B, F, S, PAYOUT = 10_001, 500, 2_000, 8_001


async def test_full_flow_with_exact_cents_through_the_gateway(service, gateway):
    via = await gateway(service)
    customer = await service.user("customer")
    contractor = await service.user("contractor")
    as_customer, as_contractor = service.token(customer), service.token(contractor, "contractor")

    deposit = await service.call(
        "POST",
        "/deposits",
        token=as_customer,
        json_body={"amount": {"amount": 20_000, "currency": "USD"}},
        base=via,
    )
    assert deposit.status == 201 and deposit.body["status"] == "succeeded", deposit.body
    await service.assert_balanced()
    assert (await service.wallet(customer))["available"] == 20_000

    created = await service.call(
        "POST",
        "/offers",
        token=as_customer,
        json_body={
            "contractor_id": contractor,
            "job_id": "job-2291",
            "budget": {"amount": B, "currency": "USD"},
        },
        key="offer-1",
        base=via,
    )
    assert created.status == 201, created.body
    offer = created.body
    assert offer["status"] == "created"
    assert offer["budget"] == {"amount": B, "currency": "USD"}
    assert offer["platform_fee"] == {"amount": F, "currency": "USD"}
    assert await service.wallet(customer) == {
        "available": 20_000 - B - F,
        "held": B + F,
        "currency": "USD",
        "frozen": False,
    }
    await service.assert_balanced()

    accepted = await service.call(
        "POST", f"/offers/{offer['id']}/accept", token=as_contractor, base=via
    )
    assert accepted.status == 200 and accepted.body["status"] == "accepted", accepted.body
    assert await service.balance(acct.platform("revenue", "USD")) == F
    assert await service.balance(acct.escrow("USD", offer["id"])) == B
    assert await service.balance(acct.hold("USD", offer["id"])) == 0
    assert (await service.wallet(customer))["held"] == B
    await service.assert_balanced()

    completed = await service.call(
        "POST", f"/offers/{offer['id']}/complete", token=as_customer, base=via
    )
    assert completed.status == 200, completed.body
    assert completed.body["status"] == "completed"
    assert completed.body["service_fee"] == {"amount": S, "currency": "USD"}
    assert completed.body["payout"] == {"amount": PAYOUT, "currency": "USD"}
    assert (await service.wallet(contractor))["available"] == PAYOUT
    assert await service.balance(acct.platform("revenue", "USD")) == F + S == 2_500
    assert await service.wallet(customer) == {
        "available": 20_000 - B - F,
        "held": 0,
        "currency": "USD",
        "frozen": False,
    }
    report = await service.assert_balanced()
    assert report.total == 0 and report.pending_transfers == 0

    # One event per transition, with the amounts of DESIGN §3.1.
    money = {"amount": B, "currency": "USD"}
    fee = {"amount": F, "currency": "USD"}
    for event_type in ("payments.offer.created", "payments.offer.accepted"):
        [event] = await service.tap.wait_for(event_type, offer_id=offer["id"])
        assert event["data"]["budget"] == money and event["data"]["platform_fee"] == fee
        assert event["data"]["customer_id"] == customer
        assert event["data"]["contractor_id"] == contractor
    [done] = await service.tap.wait_for("payments.offer.completed", offer_id=offer["id"])
    assert done["data"]["service_fee"] == {"amount": S, "currency": "USD"}
    assert done["data"]["payout"] == {"amount": PAYOUT, "currency": "USD"}
    [dep] = await service.tap.wait_for("payments.deposit.succeeded", user_id=customer)
    assert dep["data"]["amount"] == {"amount": 20_000, "currency": "USD"}

    await asyncio.sleep(0.5)  # anything duplicated would have arrived by now
    for event_type in ("created", "accepted", "completed"):
        assert len(service.tap.of(f"payments.offer.{event_type}", offer_id=offer["id"])) == 1

    # The customer's history: running balances, newest first.
    history = await service.call("GET", "/transactions", token=as_customer, base=via)
    assert history.status == 200
    assert [
        (i["amount"]["amount"], i["balance_after"]["amount"]) for i in history.body["items"]
    ] == [
        (-(B + F), 20_000 - B - F),
        (20_000, 20_000),
    ]

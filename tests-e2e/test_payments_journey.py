"""A marketplace payment through the gateway, as client apps make it: a customer and a
contractor sign up (emailed codes), the customer deposits (test provider), offers
B = 10,001, the contractor accepts, the customer completes: exact cents on both wallets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from switchyard.testing.journeys import call, signed_up

pytestmark = pytest.mark.timeout(300)


async def wallet_of(client: aiohttp.ClientSession, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    result: dict[str, Any] = await call(
        client, "GET", "/api/v1/payments/wallet", expect=200, headers=headers
    )
    return result


async def test_offer_paid_through_escrow_with_exact_cents(suite, client) -> None:
    customer_id, customer = await signed_up(
        client, suite, "Customer", role="customer", email_prefix="pay"
    )
    contractor_id, contractor = await signed_up(
        client, suite, "Contractor", role="contractor", email_prefix="pay"
    )
    as_customer = {"Authorization": f"Bearer {customer}"}
    as_contractor = {"Authorization": f"Bearer {contractor}"}

    deposit = await call(
        client,
        "POST",
        "/api/v1/payments/deposits",
        expect=201,
        headers={**as_customer, "Idempotency-Key": "e2e-deposit"},
        json={"amount": {"amount": 20_000, "currency": "USD"}},
    )
    assert deposit["status"] == "succeeded"

    # The payments service learns the contractor's role from auth's events: retry briefly.
    deadline = time.monotonic() + 30
    while True:
        async with client.post(
            "/api/v1/payments/offers",
            headers={**as_customer, "Idempotency-Key": f"e2e-offer-{time.monotonic()}"},
            json={
                "contractor_id": contractor_id,
                "job_id": "job-2291",
                "budget": {"amount": 10_001, "currency": "USD"},
            },
        ) as response:
            offer = await response.json(content_type=None)
            if response.status == 201 or time.monotonic() > deadline:
                break
        await asyncio.sleep(0.5)
    assert response.status == 201, offer
    assert offer["platform_fee"] == {"amount": 500, "currency": "USD"}

    accepted = await call(
        client,
        "POST",
        f"/api/v1/payments/offers/{offer['id']}/accept",
        expect=200,
        headers=as_contractor,
    )
    assert accepted["status"] == "accepted"
    wrong = await call(
        client,
        "POST",
        f"/api/v1/payments/offers/{offer['id']}/accept",
        expect=409,
        headers=as_contractor,
    )
    assert wrong["current_status"] == "accepted"
    completed = await call(
        client,
        "POST",
        f"/api/v1/payments/offers/{offer['id']}/complete",
        expect=200,
        headers=as_customer,
    )
    assert completed["payout"] == {"amount": 8_001, "currency": "USD"}
    assert await wallet_of(client, customer) == {
        "available": 9_499,
        "held": 0,
        "currency": "USD",
        "frozen": False,
    }
    assert (await wallet_of(client, contractor))["available"] == 8_001

    out = await call(
        client,
        "POST",
        "/api/v1/payments/withdrawals",
        expect=201,
        headers=as_contractor,
        json={"amount": {"amount": 8_001, "currency": "USD"}},
    )
    assert out["status"] == "completed"
    history = await call(
        client, "GET", "/api/v1/payments/transactions", expect=200, headers=as_contractor
    )
    assert [i["balance_after"]["amount"] for i in history["items"]] == [0, 8_001]
    assert customer_id != contractor_id

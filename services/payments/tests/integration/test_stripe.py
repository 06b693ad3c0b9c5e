"""Deposits, withdrawals and refunds through Stripe: the real ``stripe`` library against a
local fake of the API, and webhooks signed as Stripe signs them."""

from __future__ import annotations

import json
import time

import pytest

from switchyard.envelope import utcnow
from switchyard.mongo import stored_time

from ..stripe_fake import sign
from ..support import eventually

pytestmark = pytest.mark.integration

HOOK = "/api/v1/payments/webhooks/stripe"


async def start_deposit(service, fake, user: str, amount: int) -> tuple[dict, str]:
    response = await service.call(
        "POST",
        "/deposits",
        token=service.token(user),
        json_body={"amount": {"amount": amount, "currency": "USD"}},
        key=f"dep-{user}-{amount}",
    )
    assert response.status == 201, response.body
    deposit = response.body
    [intent] = [i for i in fake.intents.values() if i["metadata"]["deposit_id"] == deposit["id"]]
    assert deposit["client_secret"] == intent["client_secret"]
    assert deposit["status"] == "pending"
    return deposit, intent["id"]


async def test_a_paid_intent_credits_the_wallet_once_through_the_gateway(
    stripe_service, fake_stripe, gateway
):
    service, fake = stripe_service, fake_stripe
    via = await gateway(service)
    user = await service.user("customer")
    deposit, intent_id = await start_deposit(service, fake, user, 20_000)
    # The library sent the PaymentIntent with an idempotency key naming the deposit.
    assert f"deposit-{deposit['id']}" in fake.idempotency_keys
    assert (await service.wallet(user))["available"] == 0

    payload = fake.succeed(intent_id)
    status, body = await fake.deliver(via + HOOK, payload)  # public route through the gateway
    assert (status, body) == (200, {"received": True, "replay": False})
    assert (await service.wallet(user))["available"] == 20_000
    # The same event again (Stripe retries), and another event for the same payment.
    assert await fake.deliver(service.url + HOOK, payload) == (
        200,
        {"received": True, "replay": True},
    )
    again = fake.event("payment_intent.succeeded", fake.intents[intent_id])
    assert (await fake.deliver(service.url + HOOK, again))[0] == 200
    assert (await service.wallet(user))["available"] == 20_000
    got = await service.call("GET", f"/deposits/{deposit['id']}", token=service.token(user))
    assert got.body["status"] == "succeeded"
    [event] = await service.tap.wait_for("payments.deposit.succeeded", deposit_id=deposit["id"])
    assert event["data"]["provider"] == "stripe" and event["data"]["amount"]["amount"] == 20_000
    await service.assert_balanced()


async def test_bad_signatures_are_400_and_nothing_is_stored(stripe_service, fake_stripe):
    service, fake = stripe_service, fake_stripe
    user = await service.user("customer")
    _, intent_id = await start_deposit(service, fake, user, 500)
    payload = fake.succeed(intent_id)
    cases = [
        {"secret": "whsec_wrong_" + "x" * 20},
        {"at": int(time.time()) - 301},  # outside the 300 s tolerance
    ]
    for case in cases:
        status, body = await fake.deliver(service.url + HOOK, payload, **case)
        assert status == 400 and body["type"].endswith("invalid-signature"), body
    # The signature of one payload does not fit another.
    tampered = payload.replace('"amount_received": 500', '"amount_received": 50000')
    assert tampered != payload
    signature = {"Stripe-Signature": sign(payload, fake.webhook_secret)}
    async with service.http.post(service.url + HOOK, data=tampered, headers=signature) as response:
        assert response.status == 400
    async with service.http.post(service.url + HOOK, data=payload) as response:  # no header
        assert response.status == 400
    assert await service.books.webhook_events.count_documents({}) == 0
    assert (await service.wallet(user))["available"] == 0
    failures = service.books.metrics.value("payments_webhook_signature_failures_total")
    assert failures == 4


async def test_unknown_intents_and_types_are_recorded_not_credited(stripe_service, fake_stripe):
    service, fake = stripe_service, fake_stripe
    stranger = fake.event(
        "payment_intent.succeeded",
        {
            "id": "pi_nobody",
            "object": "payment_intent",
            "amount": 999,
            "amount_received": 999,
            "currency": "usd",
            "metadata": {},
        },
    )
    assert (await fake.deliver(service.url + HOOK, stranger))[0] == 200
    other = fake.event("customer.created", {"id": "cus_1", "object": "customer"})
    assert (await fake.deliver(service.url + HOOK, other))[0] == 200
    statuses = {d["type"]: d["status"] async for d in service.books.webhook_events.find({})}
    assert statuses == {"payment_intent.succeeded": "unmatched", "customer.created": "ignored"}
    report = await service.assert_balanced()
    assert report.total == 0 and report.accounts == 0  # no money moved anywhere


async def test_a_declined_payment_fails_the_deposit(stripe_service, fake_stripe):
    service, fake = stripe_service, fake_stripe
    user = await service.user("customer")
    deposit, intent_id = await start_deposit(service, fake, user, 700)
    assert (await fake.deliver(service.url + HOOK, fake.decline(intent_id)))[0] == 200
    got = await service.call("GET", f"/deposits/{deposit['id']}", token=service.token(user))
    assert got.body["status"] == "failed" and got.body["reason"] == "card_declined"
    [event] = await service.tap.wait_for("payments.deposit.failed", deposit_id=deposit["id"])
    assert event["data"]["reason"] == "card_declined"
    assert (await service.wallet(user))["available"] == 0


async def test_a_payment_that_succeeds_after_a_decline_credits_the_wallet_once(
    stripe_service, fake_stripe
):
    """A decline sends the PaymentIntent back to ``requires_payment_method``: the customer
    may pay it with another card, and the ``payment_intent.succeeded`` that follows is real
    money. A late decline of an earlier attempt after the success changes nothing."""
    service, fake = stripe_service, fake_stripe
    user = await service.user("customer")
    deposit, intent_id = await start_deposit(service, fake, user, 700)
    assert (await fake.deliver(service.url + HOOK, fake.decline(intent_id)))[0] == 200
    declined = fake.event("payment_intent.payment_failed", dict(fake.intents[intent_id]))
    paid = fake.succeed(intent_id)  # the second card
    assert (await fake.deliver(service.url + HOOK, paid))[0] == 200
    assert (await fake.deliver(service.url + HOOK, paid))[1]["replay"] is True
    again = fake.event("payment_intent.succeeded", dict(fake.intents[intent_id]))
    assert (await fake.deliver(service.url + HOOK, again))[0] == 200
    assert (await fake.deliver(service.url + HOOK, declined))[0] == 200  # late, out of order
    assert (await service.wallet(user))["available"] == 700
    got = await service.call("GET", f"/deposits/{deposit['id']}", token=service.token(user))
    assert got.body["status"] == "succeeded" and got.body["reason"] is None, got.body
    [event] = await service.tap.wait_for("payments.deposit.succeeded", deposit_id=deposit["id"])
    assert event["data"]["amount"]["amount"] == 700
    await service.assert_balanced()


async def test_refunds_reverse_what_is_still_in_the_wallet_and_flag_the_rest(
    stripe_service, fake_stripe
):
    service, fake = stripe_service, fake_stripe
    user = await service.user("customer")
    admin = await service.user("admin")
    deposit, intent_id = await start_deposit(service, fake, user, 10_000)
    await fake.deliver(service.url + HOOK, fake.succeed(intent_id))
    refund = await service.call(
        "POST",
        f"/admin/deposits/{deposit['id']}/refund",
        token=service.token(admin, "admin"),
        json_body={"amount": 4_000},
    )
    assert refund.status == 202, refund.body
    assert [r["amount"] for r in fake.refunds.values()] == [4_000]  # through the Refunds API
    assert (await service.wallet(user))["available"] == 10_000  # moves on Stripe's word
    assert (await fake.deliver(service.url + HOOK, fake.charge_refunded(intent_id)))[0] == 200
    assert (await service.wallet(user))["available"] == 6_000
    # The user spends most of the rest; then the remaining 6,000 is refunded to the card.
    out = await service.call(
        "POST", "/payout-account", token=service.token(user), json_body={"account_id": "acct_user1"}
    )
    assert out.status == 405  # PUT only
    await service.call(
        "PUT", "/payout-account", token=service.token(user), json_body={"account_id": "acct_user1"}
    )
    spent = await service.call(
        "POST",
        "/withdrawals",
        token=service.token(user),
        json_body={"amount": {"amount": 5_000, "currency": "USD"}},
    )
    assert spent.status == 201 and spent.body["status"] == "completed"
    # An admin may not refund to the card what the wallet no longer holds...
    refused = await service.call(
        "POST",
        f"/admin/deposits/{deposit['id']}/refund",
        token=service.token(admin, "admin"),
        json_body={},
    )
    assert refused.status == 422 and refused.body["type"].endswith("refund-exceeds-wallet")
    assert len(fake.refunds) == 1
    # ...but the rest can be refunded at Stripe itself (the dashboard, a lost dispute).
    fake.intents[intent_id]["amount_refunded"] = 10_000
    assert (await fake.deliver(service.url + HOOK, fake.charge_refunded(intent_id)))[0] == 200
    got = await service.call(
        "GET", f"/deposits/{deposit['id']}", token=service.token(admin, "admin")
    )
    assert got.body["flagged"] is True
    assert (
        got.body["refund_shortfall"]["amount"] == 6_000 and got.body["refunded"]["amount"] == 4_000
    )
    assert (await service.wallet(user))["available"] == 1_000  # never below zero
    assert service.books.metrics.value("payments_refund_shortfalls_total") == 1
    await service.assert_balanced()


async def test_withdrawals_pay_out_by_connect_transfer_or_fail_back_to_the_wallet(
    stripe_service, fake_stripe
):
    service, fake = stripe_service, fake_stripe
    user = await service.user("contractor")
    deposit, intent_id = await start_deposit(service, fake, user, 9_000)
    await fake.deliver(service.url + HOOK, fake.succeed(intent_id))
    token = service.token(user)
    none = await service.call(
        "POST", "/withdrawals", token=token, json_body={"amount": {"amount": 1, "currency": "USD"}}
    )
    assert none.status == 422 and none.body["type"].endswith("no-payout-account")
    assert (
        await service.call(
            "PUT", "/payout-account", token=token, json_body={"account_id": "acct_good"}
        )
    ).status == 200

    paid = await service.call(
        "POST",
        "/withdrawals",
        token=token,
        json_body={"amount": {"amount": 3_000, "currency": "USD"}},
    )
    assert paid.status == 201 and paid.body["status"] == "completed", paid.body
    [transfer] = fake.transfers.values()
    assert (transfer["destination"], transfer["amount"]) == ("acct_good", 3_000)
    assert paid.body["payout_id"] == transfer["id"]

    fake.closed_accounts.add("acct_gone")
    await service.call("PUT", "/payout-account", token=token, json_body={"account_id": "acct_gone"})
    failed = await service.call(
        "POST",
        "/withdrawals",
        token=token,
        json_body={"amount": {"amount": 2_000, "currency": "USD"}},
    )
    assert (
        failed.status == 201
        and failed.body["status"] == "failed"
        and failed.body["reason"] == "account_closed"
    )
    assert (await service.wallet(user))["available"] == 6_000
    await service.tap.wait_for("payments.withdrawal.failed", withdrawal_id=failed.body["id"])

    # Stripe down: the withdrawal waits (money in payout-pending), the sweeper pays it later, once.
    fake.outage = 10
    await service.call("PUT", "/payout-account", token=token, json_body={"account_id": "acct_good"})
    waiting = await service.call(
        "POST",
        "/withdrawals",
        token=token,
        json_body={"amount": {"amount": 1_000, "currency": "USD"}},
    )
    assert waiting.status == 201 and waiting.body["status"] == "requested"
    assert await service.balance("payout:USD") == 1_000
    fake.outage = 0

    async def paid_later() -> bool:
        got = await service.call("GET", f"/withdrawals/{waiting.body['id']}", token=token)
        return got.body["status"] == "completed"

    await eventually(paid_later)
    assert (
        sum(
            1
            for t in fake.transfers.values()
            if t["metadata"]["withdrawal_id"] == waiting.body["id"]
        )
        == 1
    )
    assert (await service.wallet(user))["available"] == 5_000
    await service.assert_balanced()


async def test_a_stored_event_is_applied_even_when_the_process_died_after_the_200(
    stripe_service, fake_stripe
):
    service, fake = stripe_service, fake_stripe
    user = await service.user("customer")
    _, intent_id = await start_deposit(service, fake, user, 1_500)
    payload = fake.succeed(intent_id)
    event = json.loads(payload)
    # What a process that stored the event and died before applying it leaves behind.
    await service.books.webhook_events.insert_one(
        {
            "_id": event["id"],
            "type": event["type"],
            "payload": payload,
            "status": "received",
            "attempts": 0,
            "received": stored_time(utcnow()),
            "retry_at": stored_time(utcnow()),
        }
    )

    async def applied() -> bool:
        stored = await service.books.webhook_events.find_one({"_id": event["id"]})
        return stored["status"] == "applied"

    await eventually(applied)  # the sweeper applied it
    assert (await service.wallet(user))["available"] == 1_500
    # Stripe's retry of the same event is a replay.
    assert await fake.deliver(service.url + HOOK, payload) == (
        200,
        {"received": True, "replay": True},
    )
    assert (await service.wallet(user))["available"] == 1_500


async def test_a_refund_stripe_refuses_changes_nothing_and_can_be_asked_again(
    stripe_service, fake_stripe
):
    service, fake = stripe_service, fake_stripe
    user, admin = await service.user("customer"), await service.user("admin")
    deposit, intent_id = await start_deposit(service, fake, user, 3_000)
    await fake.deliver(service.url + HOOK, fake.succeed(intent_id))
    fake.outage = 10  # more than the library's retries
    path = f"/admin/deposits/{deposit['id']}/refund"
    failed = await service.call("POST", path, token=service.token(admin, "admin"), json_body={})
    assert failed.status == 502 and not fake.refunds
    fake.outage = 0
    again = await service.call("POST", path, token=service.token(admin, "admin"), json_body={})
    assert again.status == 202 and [r["amount"] for r in fake.refunds.values()] == [3_000]

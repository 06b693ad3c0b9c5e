"""Defects an adversarial review of payments found, each pinned by the attack that showed it
and what must hold instead."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest

from switchyard.envelope import utcnow
from switchyard.idempotency import COLLECTION as IDEMPOTENCY_KEYS
from switchyard.mongo import stored_time

from .test_rules import offer

pytestmark = pytest.mark.integration


async def as_if_the_process_died_before_answering(service, scope: str, user: str, key: str):
    """Turn the stored response of ``key`` back into what a SIGKILL between the request's
    effect and its stored response leaves: a running claim whose lock has lapsed (and
    whatever effect the handler had committed to)."""
    keys = service.books.ledger.accounts.database[IDEMPOTENCY_KEYS]
    result = await keys.update_one(
        {"_id": f"{scope}:{user}:{key}", "state": "done"},
        {
            "$set": {
                "state": "running",
                "owner": "the-process-that-died",
                "lock_expires": stored_time(utcnow() - timedelta(seconds=1)),
            },
            "$unset": {"status": "", "body": "", "headers": ""},
        },
    )
    assert result.modified_count == 1


async def count(service, collection: str, **query: Any) -> int:
    return await service.books.ledger.accounts.database[collection].count_documents(query)


async def test_a_deposit_retried_after_its_first_attempt_died_credits_once(service):
    user = await service.user("customer")
    body = {"amount": {"amount": 10_000, "currency": "USD"}}
    first = await service.call(
        "POST", "/deposits", token=service.token(user), json_body=body, key="dep"
    )
    assert first.status == 201
    await as_if_the_process_died_before_answering(service, "payments.deposit", user, "dep")
    retry = await service.call(
        "POST", "/deposits", token=service.token(user), json_body=body, key="dep"
    )
    assert retry.status == 201 and retry.body["id"] == first.body["id"], retry.body
    assert (await service.wallet(user))["available"] == 10_000
    assert await count(service, "deposits", user_id=user) == 1
    await service.assert_balanced()


async def test_a_withdrawal_retried_after_its_first_attempt_died_pays_out_once(service):
    user = await service.user("customer")
    await service.fund(user, 10_000)
    body = {"amount": {"amount": 4_000, "currency": "USD"}}
    first = await service.call(
        "POST", "/withdrawals", token=service.token(user), json_body=body, key="wd"
    )
    assert first.status == 201 and first.body["status"] == "completed"
    await as_if_the_process_died_before_answering(service, "payments.withdrawal", user, "wd")
    retry = await service.call(
        "POST", "/withdrawals", token=service.token(user), json_body=body, key="wd"
    )
    assert retry.status == 201 and retry.body["id"] == first.body["id"], retry.body
    assert retry.body["status"] == "completed"
    assert (await service.wallet(user))["available"] == 6_000
    assert await count(service, "withdrawals", user_id=user) == 1
    await service.assert_balanced()


async def test_a_withdrawal_whose_payout_blew_up_is_finished_by_the_retry_not_repeated(
    service,
):
    """A 500 after the wallet was debited: the retry with the same key finishes that
    withdrawal instead of debiting the wallet again."""
    user = await service.user("customer")
    await service.fund(user, 10_000)
    provider = service.books.provider
    original = provider.pay_out
    calls = []

    async def blows_up_once(**kwargs: Any):
        calls.append(kwargs["withdrawal_id"])
        if len(calls) == 1:
            raise RuntimeError("the provider's client crashed")
        return await original(**kwargs)

    provider.pay_out = blows_up_once  # type: ignore[method-assign]
    body = {"amount": {"amount": 3_000, "currency": "USD"}}
    first = await service.call(
        "POST", "/withdrawals", token=service.token(user), json_body=body, key="wd-500"
    )
    assert first.status == 500
    retry = await service.call(
        "POST", "/withdrawals", token=service.token(user), json_body=body, key="wd-500"
    )
    assert retry.status == 201 and retry.body["status"] == "completed", retry.body
    assert calls == [retry.body["id"], retry.body["id"]]  # the same withdrawal, asked again
    assert (await service.wallet(user))["available"] == 7_000
    assert await count(service, "withdrawals", user_id=user) == 1
    await service.assert_balanced()


async def test_an_offer_retried_after_its_first_attempt_died_holds_once(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 10_000)
    body = {
        "contractor_id": contractor,
        "job_id": "j",
        "budget": {"amount": 2_000, "currency": "USD"},
    }
    token = service.token(customer)
    first = await service.call("POST", "/offers", token=token, json_body=body, key="of")
    assert first.status == 201
    await as_if_the_process_died_before_answering(service, "payments.offer", customer, "of")
    retry = await service.call("POST", "/offers", token=token, json_body=body, key="of")
    assert retry.status == 201 and retry.body["id"] == first.body["id"], retry.body
    assert (await service.wallet(customer))["available"] == 10_000 - 2_100
    assert await count(service, "offers", customer_id=customer) == 1
    # An action retried after its first attempt died answers what it did, not a 409.
    as_contractor = service.token(contractor, "contractor")
    accept = f"/offers/{first.body['id']}/accept"
    accepted = await service.call("POST", accept, token=as_contractor, key="acc")
    assert accepted.status == 200
    await as_if_the_process_died_before_answering(
        service, "payments.offer-accept", contractor, "acc"
    )
    again = await service.call("POST", accept, token=as_contractor, key="acc")
    assert again.status == 200 and again.body["status"] == "accepted", again.body
    await service.assert_balanced()


async def test_an_adjustment_retried_after_its_first_attempt_died_applies_once(service):
    user, admin = await service.user("customer"), await service.user("admin")
    body = {
        "user_id": user,
        "direction": "credit",
        "reason": "goodwill",
        "amount": {"amount": 700, "currency": "USD"},
    }
    as_admin = service.token(admin, "admin")
    first = await service.call(
        "POST", "/admin/adjustments", token=as_admin, json_body=body, key="adj"
    )
    assert first.status == 201
    await as_if_the_process_died_before_answering(service, "payments.adjustment", admin, "adj")
    retry = await service.call(
        "POST", "/admin/adjustments", token=as_admin, json_body=body, key="adj"
    )
    assert retry.status == 201 and retry.body["id"] == first.body["id"], retry.body
    assert (await service.wallet(user))["available"] == 700
    await service.assert_balanced()


async def test_a_deposit_refund_retried_after_its_first_attempt_died_refunds_once(service):
    user, admin = await service.user("customer"), await service.user("admin")
    deposit = await service.fund(user, 10_000)
    path = f"/admin/deposits/{deposit['id']}/refund"
    as_admin = service.token(admin, "admin")
    first = await service.call("POST", path, token=as_admin, json_body={"amount": 3_000}, key="rf")
    assert first.status == 202 and first.body["refunded"]["amount"] == 3_000
    await as_if_the_process_died_before_answering(service, "payments.deposit-refund", admin, "rf")
    retry = await service.call("POST", path, token=as_admin, json_body={"amount": 3_000}, key="rf")
    assert retry.status == 202 and retry.body["refunded"]["amount"] == 3_000, retry.body
    assert (await service.wallet(user))["available"] == 7_000
    await service.assert_balanced()


async def test_a_demoted_admins_token_moves_no_money(service):
    """Admin actions that move money check the roles auth last published, as accepting an
    offer checks the contractor role: a token minted before the demotion is not enough."""
    customer, contractor = await service.user("customer"), await service.user("contractor")
    admin = await service.user("admin")
    deposit = (await service.fund(customer, 10_000))["id"]
    made = await offer(service, customer, contractor)
    assert (
        await service.call(
            "POST",
            f"/offers/{made['id']}/accept",
            token=service.token(contractor, "contractor"),
        )
    ).status == 200
    stale = service.token(admin, "admin")  # minted while the user was an admin
    await service.update_roles(admin, "customer")
    attempts = [
        (
            "/admin/adjustments",
            {
                "user_id": admin,
                "direction": "credit",
                "reason": "free money",
                "amount": {"amount": 10**12, "currency": "USD"},
            },
        ),
        (f"/admin/deposits/{deposit}/refund", {}),
        (f"/offers/{made['id']}/refund", None),
        (f"/offers/{made['id']}/cancel", None),
    ]
    for path, body in attempts:
        response = await service.call("POST", path, token=stale, json_body=body)
        assert response.status in (403, 404), (path, response.status, response.body)
    assert (await service.wallet(admin))["available"] == 0
    assert (await service.wallet(customer))["available"] == 10_000 - 1_050
    still = await service.call("GET", f"/offers/{made['id']}", token=service.token(customer))
    assert still.body["status"] == "accepted"
    await service.assert_balanced()


async def test_a_history_cursor_beyond_64_bits_is_a_400_not_a_500(service):
    user = await service.user("customer")
    await service.fund(user, 100)
    for before in (2**63, 2**64, 10**30):
        raw = json.dumps({"before": before}).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response = await service.call(
            "GET", f"/transactions?cursor={cursor}", token=service.token(user)
        )
        assert response.status == 400, (before, response.status)
        assert response.body["type"].endswith("invalid-cursor")


async def test_an_admin_refund_larger_than_the_wallet_holds_is_refused_and_refunds_nothing(
    service,
):
    """The card would get back money the user already spent or withdrew (the platform
    would pay twice): refused before the provider is asked."""
    user, admin = await service.user("customer"), await service.user("admin")
    deposit = await service.fund(user, 10_000)
    spent = await service.call(
        "POST",
        "/withdrawals",
        token=service.token(user),
        json_body={"amount": {"amount": 9_000, "currency": "USD"}},
    )
    assert spent.status == 201
    refunds: list[int] = []
    provider = service.books.provider
    original = provider.refund_deposit

    async def counted(**kwargs: Any):
        refunds.append(kwargs["amount"])
        return await original(**kwargs)

    provider.refund_deposit = counted  # type: ignore[method-assign]
    path = f"/admin/deposits/{deposit['id']}/refund"
    as_admin = service.token(admin, "admin")
    refused = await service.call("POST", path, token=as_admin, json_body={})
    assert refused.status == 422, refused.body
    assert refused.body["type"].endswith("refund-exceeds-wallet")
    assert refunds == []
    got = await service.call("GET", f"/deposits/{deposit['id']}", token=as_admin)
    assert got.body["flagged"] is False and got.body["refund_shortfall"]["amount"] == 0
    # What the wallet still holds can be refunded.
    partial = await service.call("POST", path, token=as_admin, json_body={"amount": 1_000})
    assert partial.status == 202 and refunds == [1_000]
    assert (await service.wallet(user))["available"] == 0
    await service.assert_balanced()


async def test_a_signed_event_of_the_wrong_shape_is_recorded_once_not_retried_forever(
    stripe_service, fake_stripe
):
    """Only Stripe can sign, but a signed event whose ``data.object`` (or the fields read
    from it) has another shape raised on every attempt and was retried with backoff for
    ever; it is now recorded ``malformed`` (or ``unmatched``) at once, nothing moved."""
    service, fake = stripe_service, fake_stripe
    hook = service.url + "/api/v1/payments/webhooks/stripe"
    shapes = {
        "evt_data_string": ("payment_intent.succeeded", "x"),
        "evt_object_list": ("payment_intent.succeeded", {"object": [1, 2]}),
        "evt_metadata_string": (
            "payment_intent.succeeded",
            {"object": {"id": "pi_x", "metadata": "x", "amount": 5, "currency": "usd"}},
        ),
        "evt_error_string": (
            "payment_intent.payment_failed",
            {"object": {"id": "pi_x", "metadata": {}, "last_payment_error": "declined"}},
        ),
    }
    for event_id, (kind, data) in shapes.items():
        payload = json.dumps({"id": event_id, "object": "event", "type": kind, "data": data})
        assert (await fake.deliver(hook, payload))[0] == 200
    stored = {d["_id"]: d["status"] async for d in service.books.webhook_events.find({})}
    assert stored == {
        "evt_data_string": "malformed",
        "evt_object_list": "malformed",
        "evt_metadata_string": "unmatched",
        "evt_error_string": "unmatched",
    }
    report = await service.assert_balanced()
    assert report.total == 0 and report.accounts == 0

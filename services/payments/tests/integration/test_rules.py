"""What is refused, and that a refusal moves nothing: illegal transitions (409 naming the
state), roles (403, checked against the stored roles), money rules (422)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration


async def offer(service, customer: str, contractor: str, budget: int = 1_000) -> dict:
    response = await service.call(
        "POST",
        "/offers",
        token=service.token(customer),
        json_body={
            "contractor_id": contractor,
            "job_id": "job-1",
            "budget": {"amount": budget, "currency": "USD"},
        },
    )
    assert response.status == 201, response.body
    return response.body


async def test_illegal_transitions_are_409_naming_the_current_state(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 5_000)
    made = await offer(service, customer, contractor)
    as_customer, as_contractor = service.token(customer), service.token(contractor, "contractor")

    early = await service.call("POST", f"/offers/{made['id']}/complete", token=as_customer)
    assert early.status == 409
    assert early.body["current_status"] == "created" and "created" in early.body["detail"]
    assert early.headers["Content-Type"].startswith("application/problem+json")

    assert (
        await service.call("POST", f"/offers/{made['id']}/accept", token=as_contractor)
    ).status == 200
    again = await service.call("POST", f"/offers/{made['id']}/accept", token=as_contractor)
    assert again.status == 409 and again.body["current_status"] == "accepted"
    cancel = await service.call("POST", f"/offers/{made['id']}/cancel", token=as_customer)
    assert cancel.status == 409 and cancel.body["current_status"] == "accepted"

    assert (
        await service.call("POST", f"/offers/{made['id']}/complete", token=as_customer)
    ).status == 200
    for action, token in (
        ("cancel", as_customer),
        ("accept", as_contractor),
        ("complete", as_customer),
    ):
        late = await service.call("POST", f"/offers/{made['id']}/{action}", token=token)
        assert late.status == 409 and late.body["current_status"] == "completed", (
            action,
            late.body,
        )
    await service.assert_balanced()


async def test_customer_doing_a_contractor_action_is_403_and_roles_come_from_the_store(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 5_000)
    made = await offer(service, customer, contractor)
    # The customer tries to accept (even with a forged-looking contractor role in the token).
    for token in (service.token(customer), service.token(customer, "contractor")):
        response = await service.call("POST", f"/offers/{made['id']}/accept", token=token)
        assert response.status == 403, response.body
    # The contractor lost the role (auth.user.updated): the token still claims it, the store not.
    await service.update_roles(contractor, "customer")
    stale = await service.call(
        "POST", f"/offers/{made['id']}/accept", token=service.token(contractor, "contractor")
    )
    assert stale.status == 403
    await service.update_roles(contractor, "contractor")
    ok = await service.call(
        "POST", f"/offers/{made['id']}/accept", token=service.token(contractor, "contractor")
    )
    assert ok.status == 200
    # A stranger does not even see the offer.
    stranger = await service.user("customer")
    hidden = await service.call(
        "POST", f"/offers/{made['id']}/complete", token=service.token(stranger)
    )
    assert hidden.status == 404
    # An offer to someone without the contractor role is refused.
    plain = await service.user("customer")
    refused = await service.call(
        "POST",
        "/offers",
        token=service.token(customer),
        json_body={
            "contractor_id": plain,
            "job_id": "j",
            "budget": {"amount": 10, "currency": "USD"},
        },
    )
    assert refused.status == 422 and refused.body["errors"][0]["code"] == "not-a-contractor"


async def test_cancel_before_acceptance_returns_b_plus_f_and_admin_refund_returns_b(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 30_000)
    first = await offer(service, customer, contractor, 10_001)
    cancelled = await service.call(
        "POST", f"/offers/{first['id']}/cancel", token=service.token(contractor, "contractor")
    )
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    assert (await service.wallet(customer))["available"] == 30_000
    [event] = await service.tap.wait_for("payments.offer.cancelled", offer_id=first["id"])
    assert event["data"]["refund"] == {"amount": 10_501, "currency": "USD"}
    assert event["data"]["cancelled_by"] == contractor

    second = await offer(service, customer, contractor, 10_001)
    await service.call(
        "POST", f"/offers/{second['id']}/accept", token=service.token(contractor, "contractor")
    )
    not_admin = await service.call(
        "POST", f"/offers/{second['id']}/refund", token=service.token(customer)
    )
    assert not_admin.status == 403
    admin = await service.user("customer", "admin")
    refunded = await service.call(
        "POST",
        f"/offers/{second['id']}/refund",
        token=service.token(admin, "admin"),
        json_body={"reason": "work not delivered"},
    )
    assert refunded.status == 200 and refunded.body["status"] == "refunded"
    assert (await service.wallet(customer))["available"] == 30_000 - 500  # F stays revenue
    [event] = await service.tap.wait_for("payments.offer.refunded", offer_id=second["id"])
    assert event["data"]["refund"] == {"amount": 10_001, "currency": "USD"}
    assert event["data"]["reason"] == "work not delivered"
    # DESIGN §5: an admin's cancel of an accepted offer is that refund.
    third = await offer(service, customer, contractor, 1_000)
    await service.call(
        "POST", f"/offers/{third['id']}/accept", token=service.token(contractor, "contractor")
    )
    via_cancel = await service.call(
        "POST", f"/offers/{third['id']}/cancel", token=service.token(admin, "admin")
    )
    assert via_cancel.status == 200 and via_cancel.body["status"] == "refunded"
    await service.assert_balanced()


async def test_money_rules_are_422_and_nothing_moves(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 1_000)
    token = service.token(customer)
    over = await service.call(
        "POST",
        "/withdrawals",
        token=token,
        json_body={"amount": {"amount": 1_001, "currency": "USD"}},
    )
    assert over.status == 422 and over.body["type"].endswith("insufficient-funds")
    too_big = await service.call(
        "POST",
        "/offers",
        token=token,
        json_body={
            "contractor_id": contractor,
            "job_id": "j",
            "budget": {"amount": 960, "currency": "USD"},
        },
    )
    assert too_big.status == 422  # 960 + 48 fee > 1,000
    euro = await service.call(
        "POST", "/deposits", token=token, json_body={"amount": {"amount": 100, "currency": "EUR"}}
    )
    assert euro.status == 422 and euro.body["errors"][0]["code"] == "unsupported-currency"
    euro_offer = await service.call(
        "POST",
        "/offers",
        token=token,
        json_body={
            "contractor_id": contractor,
            "job_id": "j",
            "budget": {"amount": 10, "currency": "EUR"},
        },
    )
    assert euro_offer.status == 422
    for bad in (
        {"amount": 0, "currency": "USD"},
        {"amount": "12", "currency": "USD"},
        {"amount": 5},
    ):
        response = await service.call("POST", "/deposits", token=token, json_body={"amount": bad})
        assert response.status == 422, bad
    assert (await service.wallet(customer)) == {
        "available": 1_000,
        "held": 0,
        "currency": "USD",
        "frozen": False,
    }
    report = await service.assert_balanced()
    assert report.total == 0 and report.pending_transfers == 0


async def test_withdrawal_moves_wallet_to_payout_pending_then_out(service):
    user = await service.user("contractor")
    await service.fund(user, 5_000)
    response = await service.call(
        "POST",
        "/withdrawals",
        token=service.token(user),
        json_body={"amount": {"amount": 3_000, "currency": "USD"}},
    )
    assert response.status == 201 and response.body["status"] == "completed", response.body
    assert (await service.wallet(user))["available"] == 2_000
    await service.tap.wait_for("payments.withdrawal.requested", user_id=user)
    [done] = await service.tap.wait_for("payments.withdrawal.completed", user_id=user)
    assert done["data"]["amount"] == {"amount": 3_000, "currency": "USD"}
    assert await service.balance("payout:USD") == 0
    await service.assert_balanced()


async def test_deleted_users_wallet_is_frozen_but_kept(service):
    user = await service.user("customer")
    contractor = await service.user("contractor")
    await service.fund(user, 2_000)
    await service.delete_user(user)
    token = service.token(user)
    assert (await service.wallet(user))["available"] == 2_000
    response = await service.call(
        "POST", "/withdrawals", token=token, json_body={"amount": {"amount": 10, "currency": "USD"}}
    )
    assert response.status == 403
    response = await service.call(
        "POST",
        "/offers",
        token=token,
        json_body={
            "contractor_id": contractor,
            "job_id": "j",
            "budget": {"amount": 10, "currency": "USD"},
        },
    )
    assert response.status == 403
    assert (await service.wallet(user))["frozen"] is True
    await service.assert_balanced()


async def test_fifty_concurrent_offers_drain_one_wallet_never_below_zero(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    deposit = 100_000
    await service.fund(customer, deposit)
    budgets = [1_000 + 137 * n for n in range(50)]  # Σ(B + F) far above the deposit

    async def make(budget: int):
        return await service.call(
            "POST",
            "/offers",
            token=service.token(customer),
            json_body={
                "contractor_id": contractor,
                "job_id": f"j{budget}",
                "budget": {"amount": budget, "currency": "USD"},
            },
        )

    responses = await asyncio.gather(*(make(b) for b in budgets))
    made = [r.body for r in responses if r.status == 201]
    assert {r.status for r in responses} <= {201, 422}
    assert made and len(made) < 50
    taken = sum(o["budget"]["amount"] + o["platform_fee"]["amount"] for o in made)
    wallet = await service.wallet(customer)
    assert wallet["available"] == deposit - taken >= 0
    assert wallet["held"] == taken
    # Accept them all concurrently too: the wallet stays exactly where it is.
    accepts = await asyncio.gather(
        *(
            service.call(
                "POST", f"/offers/{o['id']}/accept", token=service.token(contractor, "contractor")
            )
            for o in made
        )
    )
    assert {r.status for r in accepts} == {200}
    assert (await service.wallet(customer))["available"] == deposit - taken
    await service.assert_balanced()


async def test_admin_adjustments_go_through_the_adjustments_account_with_a_reason(service):
    user = await service.user("customer")
    admin = await service.user("admin")
    # auth.user.registered opened the wallet already.
    assert await service.books.ledger.accounts.count_documents({"_id": "wallet:USD:" + user}) == 1
    as_admin = service.token(admin, "admin")
    body = {
        "user_id": user,
        "amount": {"amount": 700, "currency": "USD"},
        "direction": "credit",
        "reason": "goodwill",
    }
    made = await service.call("POST", "/admin/adjustments", token=as_admin, json_body=body)
    assert made.status == 201 and made.body["status"] == "applied" and made.body["by"] == admin
    assert (await service.wallet(user))["available"] == 700
    assert await service.balance("adjustments:USD") == 0  # nets to zero per adjustment
    debit = {
        **body,
        "direction": "debit",
        "amount": {"amount": 200, "currency": "USD"},
        "reason": "chargeback fee",
    }
    assert (
        await service.call("POST", "/admin/adjustments", token=as_admin, json_body=debit)
    ).status == 201
    assert (await service.wallet(user))["available"] == 500
    too_much = {**debit, "amount": {"amount": 501, "currency": "USD"}}
    refused = await service.call("POST", "/admin/adjustments", token=as_admin, json_body=too_much)
    assert refused.status == 422 and (await service.wallet(user))["available"] == 500
    no_reason = {k: v for k, v in body.items() if k != "reason"}
    assert (
        await service.call("POST", "/admin/adjustments", token=as_admin, json_body=no_reason)
    ).status == 422
    assert (
        await service.call("POST", "/admin/adjustments", token=service.token(user), json_body=body)
    ).status == 403
    transfers = await service.books.ledger.transfers.find({"kind": "adjustment"}).to_list()
    # Two per applied adjustment, each through the adjustments account; the refused debit
    # stopped at its first transfer (failed, nothing moved).
    assert sorted(t["state"] for t in transfers) == ["failed"] + ["posted"] * 4
    assert all("adjustments:USD" in (t["debit"], t["credit"]) for t in transfers)
    history = await service.call("GET", "/transactions", token=service.token(user))
    assert [i["balance_after"]["amount"] for i in history.body["items"]] == [500, 700]
    await service.assert_balanced()

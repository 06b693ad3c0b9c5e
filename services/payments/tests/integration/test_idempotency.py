"""Idempotency-Key on money-moving POSTs (DESIGN §4): a replay returns the original
response and moves nothing; a different body is 422; concurrent requests with one key
execute once."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration


async def test_same_key_twice_is_one_effect_and_a_different_body_is_422(service):
    user = await service.user("customer")
    token = service.token(user)
    body = {"amount": {"amount": 1_234, "currency": "USD"}}
    first = await service.call("POST", "/deposits", token=token, json_body=body, key="dep-1")
    second = await service.call("POST", "/deposits", token=token, json_body=body, key="dep-1")
    assert first.status == second.status == 201
    assert second.body == first.body and second.headers.get("Idempotent-Replayed") == "true"
    assert (await service.wallet(user))["available"] == 1_234
    other = await service.call(
        "POST",
        "/deposits",
        token=token,
        json_body={"amount": {"amount": 9, "currency": "USD"}},
        key="dep-1",
    )
    assert other.status == 422 and other.body["type"].endswith("idempotency-key-reused")
    assert (await service.wallet(user))["available"] == 1_234


async def test_concurrent_requests_with_one_key_execute_once(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 10_000)
    body = {
        "contractor_id": contractor,
        "job_id": "j",
        "budget": {"amount": 1_000, "currency": "USD"},
    }
    responses = await asyncio.gather(
        *(
            service.call(
                "POST", "/offers", token=service.token(customer), json_body=body, key="offer-k"
            )
            for _ in range(10)
        )
    )
    statuses = [r.status for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    created = {r.body["id"] for r in responses if r.status == 201}
    assert len(created) == 1  # every 201 is the original or its replay
    assert (await service.wallet(customer))["available"] == 10_000 - 1_050
    listed = await service.call("GET", "/offers", token=service.token(customer))
    assert [o["id"] for o in listed.body["items"]] == list(created)


async def test_withdrawal_and_offer_actions_replay_without_moving_twice(service):
    customer, contractor = await service.user("customer"), await service.user("contractor")
    await service.fund(customer, 10_000)
    token = service.token(customer)
    withdrawal = {"amount": {"amount": 500, "currency": "USD"}}
    for _ in range(3):
        response = await service.call(
            "POST", "/withdrawals", token=token, json_body=withdrawal, key="wd-1"
        )
        assert response.status == 201
    assert (await service.wallet(customer))["available"] == 9_500
    made = await service.call(
        "POST",
        "/offers",
        token=token,
        json_body={
            "contractor_id": contractor,
            "job_id": "j",
            "budget": {"amount": 100, "currency": "USD"},
        },
    )
    accept = f"/offers/{made.body['id']}/accept"
    as_contractor = service.token(contractor, "contractor")
    first = await service.call("POST", accept, token=as_contractor, key="acc-1")
    replay = await service.call("POST", accept, token=as_contractor, key="acc-1")
    assert (
        first.status == replay.status == 200 and replay.headers.get("Idempotent-Replayed") == "true"
    )
    fresh = await service.call("POST", accept, token=as_contractor, key="acc-2")
    assert fresh.status == 409  # a new key is a new request: the offer is accepted already
    await service.assert_balanced()

"""Payment and file events: the right people, on the right channels, once — and the in-app
inbox API they fill. Real broker, store, SMTP server and firebase-admin against a fake FCM."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from notification_svc import keys
from switchyard.envelope import Envelope, new_envelope, utcnow
from switchyard.events.file import FileUploaded
from switchyard.events.payments import (
    DepositFailed,
    OfferCompleted,
    OfferCreated,
)
from switchyard.testing import eventually, service_bus

from ..support import event, registered, user_id

pytestmark = pytest.mark.integration
INBOX = "/api/v1/notifications"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def usd(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "USD"}


def offer(model: Any, customer: str, contractor: str, **extra: Any) -> Any:
    return model(
        offer_id=f"of_{uuid.uuid4().hex}",
        customer_id=customer,
        contractor_id=contractor,
        job_id="job-2291",
        budget=usd(10001),
        platform_fee=usd(500),
        **extra,
    )


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def producers(settings_overrides):  # type: ignore[no-untyped-def]
    buses = {name: service_bus(settings_overrides, name) for name in ("payments", "file")}
    for bus in buses.values():
        await bus.connect()
    yield buses
    for bus in buses.values():
        await bus.close()


@pytest.fixture
async def world(start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server):  # type: ignore[no-untyped-def]
    service = await start_service(smtp_port=smtp_sink.port, **fcm_settings)
    customer, contractor = user_id(), user_id()
    tokens = {}
    for uid, name in ((customer, "Ada"), (contractor, "Grace")):
        await service.publish(event(registered(uid, display_name=name)))
        tokens[uid] = "tok-" + uuid.uuid4().hex + "-" + uid
        fake_fcm.register(tokens[uid])
        async with http.post(
            service.url + "/api/v1/notifications/devices",
            json={"token": tokens[uid], "platform": "android"},
            headers=bearer(jwks_server.token(uid, ["customer"])),
        ) as response:
            assert response.status == 201
    directory = service.app[keys.DIRECTORY]

    async def known() -> bool:
        return all([await directory.get(uid) is not None for uid in (customer, contractor)])

    await eventually(known, 10)
    return service, customer, contractor, tokens


async def channels_of(service, envelope: Envelope, count: int) -> dict[tuple[str, str], str]:  # type: ignore[no-untyped-def]
    found: dict[tuple[str, str], str] = {}

    async def settled() -> bool:
        records = await service.deliveries_of(envelope.id)
        found.clear()
        found.update({(r.user_id, r.channel): r.status for r in records if r.final})
        return len(found) >= count

    await eventually(settled, 15)
    return found


async def test_an_offer_created_tells_the_contractor_on_every_channel_once(
    world, producers, smtp_sink, fake_fcm, http, jwks_server
) -> None:
    service, customer, contractor, tokens = world
    envelope = new_envelope(
        offer(OfferCreated, customer, contractor, created_at=utcnow()), service="payments"
    )
    await producers["payments"].publish(envelope)
    await producers["payments"].publish(envelope)  # a duplicate: still once
    statuses = await channels_of(service, envelope, 3)
    assert statuses == {
        (contractor, "email"): "sent",
        (contractor, "push"): "sent",
        (contractor, "in_app"): "sent",
    }
    await asyncio.sleep(1.0)
    [mail] = [m for m in smtp_sink.messages if contractor in m.recipients[0]]
    assert mail.subject == "New offer: $100.01 — Switchyard"
    assert "Budget: $100.01" in mail.text and "Platform fee: $5.00" in mail.text
    assert "<td" in mail.html and "$100.01" in mail.html
    [push] = fake_fcm.to(tokens[contractor])
    assert push.notification["title"] == "New offer: $100.01"
    assert push.data["offer_id"] == envelope.data["offer_id"]
    assert fake_fcm.to(tokens[customer]) == []
    async with http.get(
        service.url + INBOX, headers=bearer(jwks_server.token(contractor, ["contractor"]))
    ) as response:
        body = await response.json()
    assert body["unread_count"] == 1
    assert body["items"][0]["title"] == "New offer: $100.01"
    assert body["items"][0]["category"] == "payments"


async def test_a_completed_offer_tells_both_and_an_opted_out_email_is_suppressed(
    world, producers, smtp_sink, fake_fcm, http, jwks_server
) -> None:
    service, customer, contractor, tokens = world
    async with http.put(
        service.url + "/api/v1/notifications/preferences",
        json={"preferences": {"payments": {"email": False}}},
        headers=bearer(jwks_server.token(customer, ["customer"])),
    ) as response:
        assert response.status == 200
    envelope = new_envelope(
        offer(
            OfferCompleted,
            customer,
            contractor,
            service_fee=usd(2000),
            payout=usd(8001),
            completed_at=utcnow(),
        ),
        service="payments",
    )
    await producers["payments"].publish(envelope)
    statuses = await channels_of(service, envelope, 6)
    assert statuses[(customer, "email")] == "suppressed"
    assert {statuses[(customer, c)] for c in ("push", "in_app")} == {"sent"}
    assert {statuses[(contractor, c)] for c in ("email", "push", "in_app")} == {"sent"}
    [push] = fake_fcm.to(tokens[contractor])
    assert push.notification["title"] == "You were paid $80.01"
    [record] = [
        r
        for r in await service.deliveries_of(envelope.id)
        if (r.user_id, r.channel) == (customer, "email")
    ]
    assert record.reason == "opted-out"


async def test_deposit_failed_goes_to_the_owner_and_file_uploads_only_to_the_inbox(
    world, producers, http, jwks_server
) -> None:
    service, customer, _, _ = world
    deposit = new_envelope(
        DepositFailed(
            deposit_id="dp_1",
            user_id=customer,
            amount=usd(20000),
            provider="stripe",
            reason="card_declined",
            failed_at=utcnow(),
        ),
        service="payments",
    )
    upload = new_envelope(
        FileUploaded(
            file_id="f_1",
            owner_id=customer,
            purpose="attachment",
            content_type="image/png",
            size=10,
            sha256="a" * 64,
            filename="plan.png",
            uploaded_at=utcnow() + timedelta(seconds=1),
        ),
        service="file",
    )
    await producers["payments"].publish(deposit)
    await producers["file"].publish(upload)
    assert await channels_of(service, deposit, 3) == {
        (customer, "email"): "sent",
        (customer, "push"): "sent",
        (customer, "in_app"): "sent",
    }
    assert await channels_of(service, upload, 1) == {(customer, "in_app"): "sent"}

    headers = bearer(jwks_server.token(customer, ["customer"]))
    async with http.get(service.url + INBOX, params={"limit": "1"}, headers=headers) as response:
        first = await response.json()
    assert first["unread_count"] == 2 and len(first["items"]) == 1 and first["next_cursor"]
    newest = first["items"][0]
    async with http.post(service.url + f"{INBOX}/{newest['id']}/read", headers=headers) as r:
        assert r.status == 200 and (await r.json())["read_at"] is not None
    async with http.get(service.url + INBOX, params={"unread": "true"}, headers=headers) as r:
        unread = await r.json()
    assert unread["unread_count"] == 1 and newest["id"] not in [i["id"] for i in unread["items"]]
    async with http.post(service.url + f"{INBOX}/read-all", headers=headers) as r:
        assert (await r.json())["read"] == 1
    async with http.get(service.url + INBOX, headers=headers) as r:
        assert (await r.json())["unread_count"] == 0
    # Someone else's item is a 404, not a read; a bad cursor a 400.
    other = bearer(jwks_server.token(user_id(), ["customer"]))
    async with http.post(service.url + f"{INBOX}/{newest['id']}/read", headers=other) as r:
        assert r.status == 404
    async with http.get(service.url + INBOX, params={"cursor": "bm9wZQ"}, headers=headers) as r:
        assert r.status == 400

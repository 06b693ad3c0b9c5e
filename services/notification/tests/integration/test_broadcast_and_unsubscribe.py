"""Role broadcasts fanned out in batches through the bus, and one-click unsubscribe links."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from notification_svc import keys
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserRegistered
from switchyard.events.payments import OfferCreated
from switchyard.testing import eventually, service_bus

from ..support import event, password_changed, user_id

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        yield session


async def user_with(service, role: str, name: str = "Ada") -> str:  # type: ignore[no-untyped-def]
    uid = user_id()
    await service.publish(
        event(
            UserRegistered(
                user_id=uid,
                email=f"{uid}@example.com",
                display_name=name,
                roles=[role],
                registered_at=utcnow(),
            )
        )
    )
    return uid


async def test_a_broadcast_reaches_every_member_of_the_role_once_in_batches(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, broadcast_batch_size=3, **fcm_settings)
    contractors = [await user_with(service, "contractor") for _ in range(7)]
    customers = [await user_with(service, "customer") for _ in range(2)]
    directory = service.app[keys.DIRECTORY]

    async def known() -> bool:
        return len(await directory.get_many(contractors + customers)) == 9

    await eventually(known, 10)
    tokens = {}
    for uid in contractors + customers:
        tokens[uid] = f"tok-{uuid.uuid4().hex}-{uid}"
        fake_fcm.register(tokens[uid])
        async with http.post(
            service.url + "/api/v1/notifications/devices",
            json={"token": tokens[uid], "platform": "android"},
            headers=bearer(jwks_server.token(uid, ["contractor"])),
        ) as r:
            assert r.status == 201
    opted_out = contractors[0]
    async with http.put(
        service.url + "/api/v1/notifications/preferences",
        json={"preferences": {"payments": {"push": False}}},
        headers=bearer(jwks_server.token(opted_out, ["contractor"])),
    ) as r:
        assert r.status == 200

    admin = bearer(jwks_server.token("admin-1", ["admin"]))
    body = {"role": "contractor", "category": "payments", "title": "Payouts", "body": "Faster."}
    async with http.post(
        service.url + "/api/v1/notifications/broadcast", json=body, headers=admin
    ) as r:
        assert r.status == 202
        broadcast = await r.json()
    async with http.post(
        service.url + "/api/v1/notifications/broadcast",
        json=body,
        headers=bearer(jwks_server.token(contractors[1], ["contractor"])),
    ) as r:
        assert r.status == 403  # admins only

    async def finished() -> bool:
        async with http.get(
            service.url + f"/api/v1/notifications/broadcasts/{broadcast['id']}", headers=admin
        ) as r:
            progress = await r.json()
        return progress["status"] == "done"

    await eventually(finished, 20)
    async with http.get(
        service.url + f"/api/v1/notifications/broadcasts/{broadcast['id']}", headers=admin
    ) as r:
        progress = await r.json()
    assert (progress["batches_done"], progress["recipients"]) == (3, 7)  # 3 + 3 + 1
    await fake_fcm.wait_for(6)
    await asyncio.sleep(1.0)
    pushed = sorted(p.token for p in fake_fcm.received)
    assert pushed == sorted(tokens[u] for u in contractors[1:])  # once each; none opted out
    for uid in contractors:
        async with http.get(
            service.url + "/api/v1/notifications",
            headers=bearer(jwks_server.token(uid, ["contractor"])),
        ) as r:
            items = (await r.json())["items"]
        assert [(i["title"], i["body"]) for i in items] == [("Payouts", "Faster.")]
    for uid in customers:
        assert fake_fcm.to(tokens[uid]) == []
    records = service.deliveries.collection.find({"template": "broadcast", "user_id": opted_out})
    by_channel = {d["channel"]: (d["status"], d.get("reason")) async for d in records}
    assert by_channel == {"push": ("suppressed", "opted-out"), "in_app": ("sent", None)}


async def test_payment_mail_carries_one_click_unsubscribe_that_flips_the_preference(
    start_service, smtp_sink, http, jwks_server, settings_overrides
) -> None:
    service = await start_service(
        smtp_port=smtp_sink.port, public_base_url="https://app.example.com"
    )
    customer, contractor = (
        await user_with(service, "customer"),
        await user_with(service, "contractor", "Grace"),
    )
    directory = service.app[keys.DIRECTORY]

    async def known() -> bool:
        return len(await directory.get_many([customer, contractor])) == 2

    await eventually(known, 10)
    payments = service_bus(settings_overrides, "payments")
    await payments.connect()

    def offer() -> Any:
        return new_envelope(
            OfferCreated(
                offer_id=f"of_{uuid.uuid4().hex}",
                customer_id=customer,
                contractor_id=contractor,
                job_id="job-1",
                budget={"amount": 100, "currency": "EUR"},  # type: ignore[arg-type]
                platform_fee={"amount": 5, "currency": "EUR"},  # type: ignore[arg-type]
                created_at=utcnow(),
            ),
            service="payments",
        )

    await payments.publish(offer())
    mail = await smtp_sink.wait_for(lambda m: contractor in m.recipients[0], timeout=15)
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(mail.message["List-Unsubscribe"]).strip("<>")
    assert link.startswith("https://app.example.com/api/v1/notifications/unsubscribe?token=")
    local = link.replace("https://app.example.com", service.url)

    # Security mail has no unsubscribe header: it cannot be turned off.
    await service.publish(event(password_changed(contractor)))
    security = await smtp_sink.wait_for(
        lambda m: contractor in m.recipients[0] and "password" in m.subject.lower(), timeout=15
    )
    assert security.message["List-Unsubscribe"] is None

    async with http.get(local) as r:  # a GET (a scanner) changes nothing
        assert r.status == 200 and "<form" in await r.text()
    async with http.post(local + "x", data="List-Unsubscribe=One-Click") as r:
        assert r.status == 400  # a tampered token
    async with http.post(
        local,
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 200
    preferences = await service.app[keys.PREFERENCES].get(contractor)
    assert not preferences.allows("payments", "email")
    assert preferences.allows("payments", "push")

    second = offer()
    await payments.publish(second)
    record = await service.wait_delivery(second.id, lambda d: d.channel == "email")
    assert (record.status, record.reason) == ("suppressed", "opted-out")
    await payments.close()

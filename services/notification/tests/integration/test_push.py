"""Push through the real firebase-admin against a local FCM (v1 API + OAuth token endpoint),
chat pushes with their digest, and the device API — on the real broker and store."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from notification_svc import keys
from notification_svc.adapters.fcm import fcm_send_url
from switchyard.envelope import new_envelope
from switchyard.testing import eventually

from ..support import chat_bus, event, message_sent, registered, user_id

pytestmark = pytest.mark.integration

DEVICES = "/api/v1/notifications/devices"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fcm_token() -> str:
    return "fcm-" + uuid.uuid4().hex + ":APA91b" + uuid.uuid4().hex


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def chat(settings_overrides):  # type: ignore[no-untyped-def]
    bus = chat_bus(settings_overrides)
    await bus.connect()
    yield bus
    await bus.close()


async def device(service, http, jwks_server, uid: str, token: str, platform: str = "android"):  # type: ignore[no-untyped-def]
    async with http.post(
        service.url + DEVICES,
        json={"token": token, "platform": platform},
        headers=bearer(jwks_server.token(uid, ["customer"])),
    ) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def people(service, *names: str) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for name in names:
        uid = user_id()
        await service.publish(event(registered(uid, display_name=name)))
        ids.append(uid)
    directory = service.app[keys.DIRECTORY]

    async def known() -> bool:
        return all([await directory.get(uid) is not None for uid in ids])

    await eventually(known, 10)
    return ids


async def test_a_chat_message_reaches_the_offline_recipients_phone_through_firebase_admin(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, chat
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **fcm_settings)
    ada, grace, alan = await people(service, "Ada", "Grace", "Alan")
    token = fcm_token()
    fake_fcm.register(token)
    await device(service, http, jwks_server, grace, token, "ios")
    await device(service, http, jwks_server, ada, fcm_token())  # the sender's phone: no push
    conversation = f"c_{uuid.uuid4().hex}"
    data = message_sent(conversation, 7, ada, [grace, alan], offline=[grace, ada])
    envelope = new_envelope(data, service="chat")
    await chat.publish(envelope)
    await chat.publish(envelope)  # the same event twice: still one push

    [push] = await fake_fcm.wait_for(1)
    assert push.token == token
    assert push.notification == {"title": "Ada", "body": "Are we still on for Thursday?"}
    assert push.data == {
        "kind": "chat",
        "conversation_id": conversation,
        "message_id": data.message_id,
        "seq": "7",
    }
    assert push.android["collapse_key"] == f"chat-{conversation}"
    assert push.apns["payload"]["aps"]["thread-id"] == f"chat-{conversation}"
    assert fake_fcm.token_requests >= 1  # the OAuth exchange went to the file's token_uri
    record = await service.wait_delivery(
        envelope.id, lambda d: d.channel == "push" and d.user_id == grace and d.final
    )
    assert record.status == "sent"
    await asyncio.sleep(1.0)
    assert len(fake_fcm.received) == 1  # neither the duplicate nor the sender got one
    assert await service.deliveries.find(envelope.id, "push", ada) is None
    # Grace's inbox has the message too.
    async with http.get(
        service.url + "/api/v1/notifications",
        headers=bearer(jwks_server.token(grace, ["customer"])),
    ) as response:
        inbox = await response.json()
    assert inbox["unread_count"] == 1
    assert inbox["items"][0]["data"]["conversation_id"] == conversation


async def test_unregistered_tokens_are_removed_and_a_429_is_retried_after_retry_after(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, chat
) -> None:
    service = await start_service(
        smtp_port=smtp_sink.port, bus_retry_delays=[0.2, 1.5, 3.0], **fcm_settings
    )
    ada, grace = await people(service, "Ada", "Grace")
    live, stale = fcm_token(), fcm_token()
    fake_fcm.register(live)  # `stale` is unknown to FCM: UNREGISTERED
    await device(service, http, jwks_server, grace, live)
    await device(service, http, jwks_server, grace, stale, "web")

    fake_fcm.fail_next(429, times=2, retry_after=1)  # both of Grace's devices: quota
    started = asyncio.get_running_loop().time()
    envelope = new_envelope(message_sent(f"c_{uuid.uuid4().hex}", 1, ada, [grace]), service="chat")
    await chat.publish(envelope)
    [push] = await fake_fcm.wait_for(1, timeout=15)
    assert push.token == live
    assert asyncio.get_running_loop().time() - started >= 1.0  # waited for Retry-After
    record = await service.wait_delivery(envelope.id, lambda d: d.channel == "push" and d.final)
    assert record.status == "sent" and record.attempts == 2

    devices = await service.app[keys.DEVICES].of_user(grace)
    assert [d.token for d in devices] == [live]  # the unregistered one is gone
    metrics = service.app[keys.NOTIFICATION_METRICS]
    assert metrics.value("notification_push_tokens_removed_total") == 1


async def test_five_quick_messages_fold_into_at_most_two_pushes(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, chat
) -> None:
    service = await start_service(
        smtp_port=smtp_sink.port,
        chat_push_window_seconds=1.5,
        digest_poll_seconds=0.2,
        **fcm_settings,
    )
    ada, grace = await people(service, "Ada", "Grace")
    token = fcm_token()
    fake_fcm.register(token)
    await device(service, http, jwks_server, grace, token)
    conversation = f"c_{uuid.uuid4().hex}"
    for seq in range(1, 6):
        await chat.publish(
            new_envelope(
                message_sent(conversation, seq, ada, [grace], preview=f"m{seq}"), service="chat"
            )
        )
    await fake_fcm.wait_for(2, timeout=10)
    await asyncio.sleep(2.0)  # another window: nothing more arrives
    pushes = fake_fcm.to(token)
    assert len(pushes) == 2
    # Messages are handled concurrently: whichever opened the window was pushed, the other
    # four folded into the digest.
    first = pushes[0].notification["body"]
    assert first in {f"m{seq}" for seq in range(1, 6)}
    assert pushes[1].notification["body"] == "4 new messages from Ada"
    assert pushes[1].data["count"] == "4"
    assert pushes[1].data["seq"] == str(max(s for s in range(1, 6) if f"m{s}" != first))
    metrics = service.app[keys.NOTIFICATION_METRICS]
    assert metrics.value("notification_digest_folds_total") == 4


async def test_no_push_after_the_recipient_read_past_the_message_or_muted_the_conversation(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, chat
) -> None:
    service = await start_service(
        smtp_port=smtp_sink.port,
        chat_push_window_seconds=1.0,
        digest_poll_seconds=0.2,
        **fcm_settings,
    )
    ada, grace = await people(service, "Ada", "Grace")
    token = fcm_token()
    fake_fcm.register(token)
    await device(service, http, jwks_server, grace, token)
    conversation = f"c_{uuid.uuid4().hex}"
    await chat.publish(new_envelope(message_sent(conversation, 1, ada, [grace]), service="chat"))
    await fake_fcm.wait_for(1)
    folded = new_envelope(message_sent(conversation, 2, ada, [grace]), service="chat")
    await chat.publish(folded)  # inside the window: folded into the digest …
    await service.wait_delivery(folded.id, lambda d: d.channel == "push")
    # … but Grace replies (she read up to seq 3) before the window closes: no digest.
    await chat.publish(new_envelope(message_sent(conversation, 3, grace, [ada]), service="chat"))
    await asyncio.sleep(2.0)
    assert len(fake_fcm.to(token)) == 1

    async with http.put(
        service.url + f"/api/v1/notifications/mutes/{conversation}",
        headers=bearer(jwks_server.token(grace, ["customer"])),
    ) as response:
        assert response.status == 200
    muted = new_envelope(message_sent(conversation, 4, ada, [grace]), service="chat")
    await chat.publish(muted)
    record = await service.wait_delivery(muted.id, lambda d: d.channel == "push")
    assert (record.status, record.reason) == ("suppressed", "muted")
    assert len(fake_fcm.to(token)) == 1


async def test_an_opted_out_push_is_recorded_suppressed_and_nothing_is_sent(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, chat
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **fcm_settings)
    ada, grace = await people(service, "Ada", "Grace")
    token = fcm_token()
    fake_fcm.register(token)
    await device(service, http, jwks_server, grace, token)
    async with http.put(
        service.url + "/api/v1/notifications/preferences",
        json={"preferences": {"chat": {"push": False}}},
        headers=bearer(jwks_server.token(grace, ["customer"])),
    ) as response:
        assert response.status == 200
    envelope = new_envelope(message_sent(f"c_{uuid.uuid4().hex}", 1, ada, [grace]), service="chat")
    await chat.publish(envelope)
    record = await service.wait_delivery(envelope.id, lambda d: d.channel == "push")
    assert (record.status, record.reason) == ("suppressed", "opted-out")
    in_app = await service.deliveries.find(envelope.id, "in_app", grace)
    assert in_app is not None and in_app.status == "sent"  # in-app was not turned off
    await asyncio.sleep(0.5)
    assert fake_fcm.received == []


async def test_devices_api_keeps_ten_per_user_and_refuses_bad_input(
    start_service, smtp_sink, fcm_settings, http, jwks_server
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **fcm_settings)
    uid = user_id()
    headers = bearer(jwks_server.token(uid, ["customer"]))
    tokens = [fcm_token() for _ in range(11)]
    for token in tokens:
        await device(service, http, jwks_server, uid, token)
    async with http.get(service.url + DEVICES, headers=headers) as response:
        listed = [d["token"] for d in (await response.json())["items"]]
    assert listed == list(reversed(tokens[1:]))  # the oldest was dropped; newest first
    async with http.delete(service.url + f"{DEVICES}/{tokens[5]}", headers=headers) as response:
        assert response.status == 204
    async with http.delete(service.url + f"{DEVICES}/{tokens[5]}", headers=headers) as response:
        assert response.status == 404
    for bad in ({"token": "x", "platform": "android"}, {"token": fcm_token(), "platform": "palm"}):
        async with http.post(service.url + DEVICES, json=bad, headers=headers) as response:
            assert response.status == 422
            assert response.content_type == "application/problem+json"
    async with http.post(
        service.url + DEVICES, json={"token": fcm_token(), "platform": "ios"}
    ) as r:
        assert r.status == 401


def test_the_send_url_follows_fcm_endpoint() -> None:
    assert (
        fcm_send_url("http://127.0.0.1:9999/", "proj")
        == "http://127.0.0.1:9999/v1/projects/proj/messages:send"
    )


async def test_members_added_to_a_group_hear_about_it_but_not_its_creator(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, chat
) -> None:
    from switchyard.envelope import utcnow
    from switchyard.events.chat import ConversationCreated

    service = await start_service(smtp_port=smtp_sink.port, **fcm_settings)
    ada, grace = await people(service, "Ada", "Grace")
    tokens = {}
    for uid in (ada, grace):
        tokens[uid] = fcm_token()
        fake_fcm.register(tokens[uid])
        await device(service, http, jwks_server, uid, tokens[uid])
    conversation = f"c_{uuid.uuid4().hex}"
    envelope = new_envelope(
        ConversationCreated(
            conversation_id=conversation,
            kind="group",
            member_ids=[ada, grace],
            created_by=ada,
            title="Kitchen remodel",
            created_at=utcnow(),
        ),
        service="chat",
    )
    await chat.publish(envelope)
    [push] = await fake_fcm.wait_for(1)
    assert push.token == tokens[grace]
    assert push.notification == {
        "title": "Kitchen remodel",
        "body": "Ada added you to Kitchen remodel",
    }
    await asyncio.sleep(0.5)
    assert fake_fcm.to(tokens[ada]) == []

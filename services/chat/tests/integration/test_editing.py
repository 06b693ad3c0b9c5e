"""Editing and deleting one's own messages (same seq, events ``chat.message.updated`` /
``.deleted``, members' sockets told), muting, and poison events on chat's queues."""

from __future__ import annotations

import json

import aio_pika
import pytest

from switchyard.testing import eventually

from ..support import ChatWorld

pytestmark = pytest.mark.integration


async def test_senders_edit_and_delete_their_own_messages(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    g = await world.socket(grace)
    sent = await world.call(
        "POST",
        f"/conversations/{cid}/messages",
        uid=ada,
        body={"body": "helo", "client_msg_id": "k1", "attachments": []},
    )
    mid = sent.body["message"]["id"]
    path = f"/conversations/{cid}/messages/{mid}"
    assert (await world.call("PATCH", path, uid=grace, body={"body": "mine now"})).status == 403
    edited = await world.call("PATCH", path, uid=ada, body={"body": " hello "})
    assert edited.status == 200
    assert edited.body["message"]["body"] == "hello" and edited.body["message"]["seq"] == 1
    assert edited.body["message"]["edited_at"]
    await g.wait_for("message", lambda m: m["message"]["body"] == "hello")
    assert (await world.call("DELETE", path, uid=grace)).status == 403
    assert (await world.call("DELETE", path, uid=ada)).status == 204
    assert (await world.call("DELETE", path, uid=ada)).status == 404
    gone = await g.wait_for("message", lambda m: m["message"]["deleted"])
    assert gone["message"]["seq"] == 1 and gone["message"]["body"] == ""
    history = await world.call("GET", f"/conversations/{cid}/messages", uid=grace)
    [kept] = history.body["items"]
    assert kept["seq"] == 1 and kept["deleted"] and kept["body"] == ""
    updated = await world.tap.wait_for("chat.message.updated", message_id=mid)
    deleted = await world.tap.wait_for("chat.message.deleted", message_id=mid)
    assert len(updated) == 1 and len(deleted) == 1 and deleted[0]["data"]["seq"] == 1
    assert (await world.call("PATCH", path, uid=ada, body={"body": "again"})).status == 404


async def test_muting_is_per_member(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    assert (
        await world.call("PUT", f"/conversations/{cid}/muted", uid=grace, body={"muted": True})
    ).status == 204
    assert (await world.call("GET", f"/conversations/{cid}", uid=grace)).body["muted"] is True
    assert (await world.call("GET", f"/conversations/{cid}", uid=ada)).body["muted"] is False
    eve = await world.user()
    assert (
        await world.call("PUT", f"/conversations/{cid}/muted", uid=eve, body={"muted": True})
    ).status == 404


async def test_a_poison_event_is_parked_and_the_queue_keeps_going(
    world: ChatWorld, settings_overrides: dict[str, object]
) -> None:
    connection = await aio_pika.connect(str(settings_overrides["amqp_url"]))
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(str(settings_overrides["bus_exchange"]))
        await exchange.publish(
            aio_pika.Message(b"{not json", content_type="application/json"),
            routing_key="file.uploaded",
        )
        await exchange.publish(
            aio_pika.Message(json.dumps({"type": "file.uploaded"}).encode()),
            routing_key="file.uploaded",
        )
        dlq = await channel.declare_queue(
            f"{settings_overrides['bus_queue_prefix']}chat.files.dlq", passive=True
        )

        async def parked() -> bool:
            declared = await channel.declare_queue(dlq.name, passive=True)
            return declared.declaration_result.message_count >= 2

        await eventually(parked)
    finally:
        await connection.close()
    ada = await world.user()
    assert await world.file(ada)  # the queue still consumes

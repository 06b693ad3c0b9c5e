"""A chat between two people who just signed up, through the gateway with the stock clients
apps use: Ada on the Node ``socket.io-client`` over long-polling, Grace on python-socketio
over WebSocket. They open a direct conversation, message each other, see receipts; Grace
drops off, misses messages, reconnects and syncs exactly what she missed; the REST list
shows the unread count."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from switchyard.testing.journeys import call, signed_up
from switchyard.testing.node import NodeSocketClient
from switchyard.testing.sockets import SocketClient

pytestmark = pytest.mark.timeout(300)


async def open_direct(client: aiohttp.ClientSession, token: str, other: str) -> dict[str, Any]:
    """The direct conversation; chat learns new users from auth's events, so a 422
    ``unknown-user`` right after sign-up is retried briefly."""
    deadline = time.monotonic() + 30
    while True:
        async with client.post(
            "/api/v1/chat/conversations",
            json={"kind": "direct", "member_ids": [other]},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            body = await response.json(content_type=None)
            if response.status == 422 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                continue
            assert response.status == 201, body
            return dict(body)


async def test_two_people_chat_with_stock_clients(suite, client) -> None:
    ada_id, ada_token = await signed_up(client, suite, "Ada", email_prefix="chat")
    grace_id, grace_token = await signed_up(client, suite, "Grace", email_prefix="chat")
    conversation = await open_direct(client, ada_token, grace_id)
    cid = conversation["id"]
    assert sorted(conversation["member_ids"]) == sorted([ada_id, grace_id])

    ada = await NodeSocketClient.start()
    grace = SocketClient(suite.gateway, token=grace_token)
    try:
        assert await ada.connect(suite.gateway, ada_token, transports=["polling"]) == "polling"
        await grace.connect(transports=["websocket"])
        assert (await ada.call("join_conversation", {"conversation_id": cid}))["last_seq"] == 0
        await grace.call("join_conversation", {"conversation_id": cid})

        hello = await ada.call(
            "send_message", {"conversation_id": cid, "body": "Hi Grace!", "client_msg_id": "a1"}
        )
        assert hello["message"]["seq"] == 1
        got = await grace.wait_for("message", lambda m: m["message"]["seq"] == 1)
        assert got["message"]["body"] == "Hi Grace!" and got["message"]["sender_id"] == ada_id
        await ada.wait_for("receipt", lambda r: r["kind"] == "delivered" and r["seq"] == 1)
        await grace.call("typing", {"conversation_id": cid, "is_typing": True})
        await ada.wait_for("typing", lambda t: t["user_id"] == grace_id and t["is_typing"])
        await grace.call(
            "send_message", {"conversation_id": cid, "body": "Hello Ada", "client_msg_id": "g1"}
        )
        await ada.wait_for("message", lambda m: m["message"]["body"] == "Hello Ada")
        assert await grace.call("mark_read", {"conversation_id": cid, "seq": 2}) == {
            "last_read_seq": 2
        }
        await ada.wait_for("receipt", lambda r: r["kind"] == "read" and r["user_id"] == grace_id)

        # Grace drops off; Ada sees her go offline and keeps writing.
        await grace.disconnect()
        await ada.wait_for("presence", lambda p: p["user_id"] == grace_id and not p["online"])
        for n in range(3, 6):
            await ada.call(
                "send_message",
                {"conversation_id": cid, "body": f"note {n}", "client_msg_id": f"a{n}"},
            )
        listed = await call(
            client,
            "GET",
            "/api/v1/chat/conversations",
            expect=200,
            headers={"Authorization": f"Bearer {grace_token}"},
        )
        [item] = [c for c in listed["items"] if c["id"] == cid]
        assert item["unread_count"] == 3 and item["last_message"]["body"] == "note 5"

        back = SocketClient(suite.gateway, token=grace_token)
        await back.connect(transports=["websocket"])
        try:
            joined = await back.call("join_conversation", {"conversation_id": cid})
            assert joined["last_seq"] == 5 and joined["last_read_seq"] == 2
            missed = await back.call("sync", {"conversation_id": cid, "after_seq": 2})
            assert [m["body"] for m in missed["messages"]] == ["note 3", "note 4", "note 5"]
            assert not missed["has_more"]
            await ada.wait_for("presence", lambda p: p["user_id"] == grace_id and p["online"])
        finally:
            await back.disconnect()
    finally:
        await grace.disconnect()
        await ada.close()

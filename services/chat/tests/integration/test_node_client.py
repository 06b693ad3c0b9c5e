"""The stock Node ``socket.io-client`` (npm, pinned) through the real gateway, over WebSocket
and over long-polling: connects with ``auth: {token}``, is refused with a reason, joins,
sends and receives (and its acks are the delivered receipts)."""

from __future__ import annotations

import pytest

from switchyard.testing.node import NodeSocketClient

from ..support import ChatWorld

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_the_node_client_joins_sends_and_receives(world: ChatWorld, transport: str) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    py = await world.socket(grace)
    node = await NodeSocketClient.start()
    try:
        assert await node.connect(world.base, world.token(ada), transports=[transport]) == transport
        joined = await node.call("join_conversation", {"conversation_id": cid})
        assert joined == {"conversation_id": cid, "last_seq": 0, "last_read_seq": 0}
        ack = await node.call(
            "send_message", {"conversation_id": cid, "body": "from node", "client_msg_id": "n1"}
        )
        assert ack["message"]["seq"] == 1 and ack["message"]["sender_id"] == ada
        await py.wait_for("message", lambda m: m["message"]["body"] == "from node")
        await py.call(
            "send_message", {"conversation_id": cid, "body": "from python", "client_msg_id": "p1"}
        )
        got = await node.wait_for("message", lambda m: m["message"]["body"] == "from python")
        assert got["message"]["seq"] == 2
        # the node client's ack of that message is Grace's "delivered"
        await py.wait_for("receipt", lambda r: r["kind"] == "delivered" and r["user_id"] == ada)
        refused = await node.call("send_message", {"conversation_id": cid, "body": 7})
        assert refused["error"]["code"] == "invalid-payload"
        synced = await node.call("sync", {"conversation_id": cid, "after_seq": 0})
        assert [m["body"] for m in synced["messages"]] == ["from node", "from python"]
    finally:
        await node.close()


async def test_the_node_client_sees_why_it_was_refused(world: ChatWorld) -> None:
    node = await NodeSocketClient.start()
    try:
        with pytest.raises(AssertionError, match="connection refused"):
            await node.connect(world.base, "not-a-token", transports=["polling"])
        assert node.refusal["message"] == "unauthorized"
        assert node.refusal["data"]["reason"]
    finally:
        await node.close()

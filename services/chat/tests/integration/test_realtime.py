"""Receipts, unread counts, typing, presence, replay after reconnect, flood limits, token
expiry, attachments and deleted accounts — through the gateway with stock clients."""

from __future__ import annotations

import asyncio

import pytest
import socketio

from switchyard.testing import eventually
from switchyard.testing.sockets import SocketClient

from ..support import ChatWorld

pytestmark = pytest.mark.integration


def send(cid: str, body: str, client_id: str, **extra: object) -> dict[str, object]:
    return {"conversation_id": cid, "body": body, "client_msg_id": client_id, **extra}


async def test_delivered_on_ack_read_on_mark_read_and_unread_counts(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    g = await world.socket(grace)  # acknowledges every event: that is "delivered"
    for n in (1, 2, 3):
        await a.call("send_message", send(cid, f"m{n}", f"c{n}"))
    delivered = await a.wait_for("receipt", lambda r: r["kind"] == "delivered" and r["seq"] == 3)
    assert delivered == {"conversation_id": cid, "user_id": grace, "kind": "delivered", "seq": 3}
    unread = await world.call("GET", f"/conversations/{cid}", uid=grace)
    assert unread.body["unread_count"] == 3

    assert await g.call("mark_read", {"conversation_id": cid, "seq": 2}) == {"last_read_seq": 2}
    read = await a.wait_for("receipt", lambda r: r["kind"] == "read")
    assert read == {"conversation_id": cid, "user_id": grace, "kind": "read", "seq": 2}
    # never backwards
    assert await g.call("mark_read", {"conversation_id": cid, "seq": 1}) == {"last_read_seq": 2}
    after = await world.call("GET", f"/conversations/{cid}", uid=grace)
    assert after.body["unread_count"] == 1 and after.body["last_read_seq"] == 2
    rest = await world.call("POST", f"/conversations/{cid}/read", uid=grace, body={"seq": 3})
    assert rest.status == 200 and rest.body == {"last_read_seq": 3}
    assert [r["seq"] for r in a.events("receipt") if r["kind"] == "read"] == [2, 3]
    assert world.chat.metrics.metrics.value("chat_message_delivery_seconds_count") >= 3


async def test_a_client_that_does_not_ack_gets_delivered_by_syncing(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    g = await world.socket(grace, ack_events=False)
    await a.call("send_message", send(cid, "hello", "c1"))
    await g.wait_for("message")
    await asyncio.sleep(0.3)
    assert not a.events("receipt")
    synced = await g.call("sync", {"conversation_id": cid, "after_seq": 0})
    assert [m["seq"] for m in synced["messages"]] == [1]
    await a.wait_for("receipt", lambda r: r["kind"] == "delivered" and r["seq"] == 1)


async def test_reconnect_and_sync_returns_exactly_the_missed_messages(start_world) -> None:  # type: ignore[no-untyped-def]
    world: ChatWorld = await start_world(socket_event_rate=1000.0, socket_event_burst=1000)
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    g = await world.socket(grace)
    for n in range(1, 4):
        await a.call("send_message", send(cid, f"m{n}", f"c{n}"))
    await g.wait_for("message", lambda m: m["message"]["seq"] == 3)
    last_seen = max(m["message"]["seq"] for m in g.events("message"))
    await g.disconnect()
    for n in range(4, 131):  # more than one sync page while Grace is away
        ack = await a.call("send_message", send(cid, f"m{n}", f"c{n}"))
        assert ack["message"]["seq"] == n
    g2 = await world.socket(grace)
    joined = await g2.call("join_conversation", {"conversation_id": cid})
    assert joined["last_seq"] == 130
    got: list[int] = []
    after = last_seen
    while True:
        page = await g2.call("sync", {"conversation_id": cid, "after_seq": after, "limit": 50})
        got += [m["seq"] for m in page["messages"]]
        if not page["has_more"]:
            break
        after = page["messages"][-1]["seq"]
    assert got == list(range(4, 131))
    assert [
        m["body"]
        for m in (await g2.call("sync", {"conversation_id": cid, "after_seq": 129}))["messages"]
    ] == ["m130"]


async def test_a_reserved_seq_whose_sender_died_becomes_a_deleted_message(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    await a.call("send_message", send(cid, "one", "c1"))
    # A sender that crashed after taking seq 2 and before storing its message:
    from switchyard.envelope import utcnow

    assert await world.chat.store.reserve_seq(cid, ada, utcnow()) is not None
    await a.call("send_message", send(cid, "three", "c3"))
    g = await world.socket(grace)
    first = await g.call("sync", {"conversation_id": cid, "after_seq": 0})
    assert [m["seq"] for m in first["messages"]] == [1] and first["has_more"]  # waits at the hole
    await asyncio.sleep(1.2)  # seq_hole_after in the tests
    later = await g.call("sync", {"conversation_id": cid, "after_seq": 1})
    assert [(m["seq"], m["deleted"]) for m in later["messages"]] == [(2, True), (3, False)]
    assert not later["has_more"]
    # The placeholder is a plain deleted message: the reserved sender, no client id.
    void = later["messages"][0]
    assert (void["sender_id"], void["client_msg_id"]) == ("system", None)
    assert (void["body"], void["attachments"], void["edited_at"]) == ("", [], None)
    assert "sender_deleted" not in void
    history = await world.call("GET", f"/conversations/{cid}/messages", uid=grace)
    assert [m for m in history.body["items"] if m["seq"] == 2] == [void]


async def test_typing_is_forwarded_throttled_and_expires(start_world) -> None:  # type: ignore[no-untyped-def]
    # Throttle 10 s and expiry 2 s: the five calls below must fall inside one throttle window
    # with no 'expiry' pause between two of them; at 1 s each, a loaded machine broke that.
    world: ChatWorld = await start_world(typing_throttle=10.0, typing_expiry=2.0)
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    g = await world.socket(grace)
    assert (await g.call("join_conversation", {"conversation_id": cid}))["last_seq"] == 0
    for _ in range(5):
        assert await a.call("typing", {"conversation_id": cid, "is_typing": True}) == {}
    started = await g.wait_for("typing", lambda t: t["is_typing"])
    assert started == {"conversation_id": cid, "user_id": ada, "is_typing": True}
    ended = await g.wait_for("typing", lambda t: not t["is_typing"], timeout=20)
    assert ended["user_id"] == ada
    assert [t["is_typing"] for t in g.events("typing")] == [True, False]  # throttled, expired
    assert not a.events("typing")  # the typist is not told about themself


async def test_presence_online_then_offline_with_last_seen(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    await world.direct(ada, grace)
    a = await world.socket(ada)
    g = await world.socket(grace)
    online = await a.wait_for("presence", lambda p: p["user_id"] == grace and p["online"])
    assert set(online) == {"user_id", "online", "last_seen"}
    second = await world.socket(grace)  # a second device: still one "online"
    await second.disconnect()
    await g.disconnect()
    offline = await a.wait_for("presence", lambda p: p["user_id"] == grace and not p["online"])
    assert offline["last_seen"]
    assert [p["online"] for p in a.events("presence") if p["user_id"] == grace] == [True, False]
    sent = await a.call("send_message", send((await world.direct(ada, grace)), "later", "c1"))
    event = await world.tap.wait_for("chat.message.sent", message_id=sent["message"]["id"])
    assert event[0]["data"]["offline_recipient_ids"] == [grace]


async def test_flooding_is_rate_limited_then_disconnected(start_world) -> None:  # type: ignore[no-untyped-def]
    world: ChatWorld = await start_world(
        socket_event_rate=5.0, socket_event_burst=10, flood_disconnect_after=20
    )
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    acks = await asyncio.gather(
        *(a.call("typing", {"conversation_id": cid, "is_typing": False}) for _ in range(25))
    )
    limited = [ack for ack in acks if "error" in ack]
    assert limited and all(ack["error"]["code"] == "rate-limited" for ack in limited)
    assert a.connected
    await asyncio.sleep(1.0)
    assert await a.call("typing", {"conversation_id": cid, "is_typing": False}) == {}
    with pytest.raises(socketio.exceptions.TimeoutError):
        await asyncio.gather(
            *(
                a.client.call("typing", {"conversation_id": cid, "is_typing": False}, timeout=3)
                for _ in range(80)
            )
        )
    await a.wait_disconnected()


async def test_a_socket_is_disconnected_when_its_token_expires(world: ChatWorld) -> None:
    ada = await world.user()
    # 5 s: connecting must finish inside the token's life (a 2 s token could expire first
    # on a loaded machine, and the connection was refused instead).
    short = world.keys_server.signer_with(lifetime=5).issue(ada, ["customer"]).token
    client = await world.socket(ada, token=short)
    assert client.connected
    await client.wait_disconnected(timeout=30)


async def test_attachments_must_be_known_own_and_not_deleted(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    mine = await world.file(ada)
    theirs = await world.file(grace)
    a = await world.socket(ada)
    ok = await a.call("send_message", send(cid, "see", "c1", attachments=[mine]))
    assert ok["message"]["attachments"] == [mine]
    for bad in (theirs, "f_unknown"):
        refused = await a.call("send_message", send(cid, "x", f"c-{bad}", attachments=[bad]))
        assert refused["error"]["code"] == "unknown-attachment"
    await world.delete_file(ada, mine)
    gone = await a.call("send_message", send(cid, "again", "c2", attachments=[mine]))
    assert gone["error"]["code"] == "unknown-attachment"
    sent = await world.tap.wait_for("chat.message.sent", conversation_id=cid)
    assert [e["data"]["attachment_ids"] for e in sent] == [[mine]]


async def test_a_deleted_account_is_disconnected_leaves_and_cannot_reconnect(
    world: ChatWorld,
) -> None:
    ada, grace, lin = await world.user(), await world.user(), await world.user()
    cid = await world.group(ada, [grace, lin])
    a = await world.socket(ada)
    g = await world.socket(grace)
    await g.call("send_message", send(cid, "bye", "c1"))
    await world.delete_user(grace)
    await g.wait_disconnected()
    client = SocketClient(world.base, token=world.token(grace))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.refusal["data"]["reason"] == "account-deleted"

    async def left() -> bool:
        view = await world.call("GET", f"/conversations/{cid}", uid=ada)
        return grace not in view.body["member_ids"]

    await eventually(left)
    history = await a.call("sync", {"conversation_id": cid, "after_seq": 0})
    (message,) = history["messages"]
    assert message["sender_id"] == grace and message.get("sender_deleted") is True


async def test_group_admins_manage_members(world: ChatWorld) -> None:
    ada, grace, lin = await world.user(), await world.user(), await world.user()
    cid = await world.group(ada, [grace])
    refused = await world.call(
        "POST", f"/conversations/{cid}/members", uid=grace, body={"user_id": lin}
    )
    assert refused.status == 403
    added = await world.call(
        "POST", f"/conversations/{cid}/members", uid=ada, body={"user_id": lin}
    )
    assert added.status == 200 and lin in added.body["member_ids"]
    linus = await world.socket(lin)
    assert (await linus.call("join_conversation", {"conversation_id": cid}))["last_seq"] == 0
    removed = await world.call("DELETE", f"/conversations/{cid}/members/{lin}", uid=ada)
    assert removed.status == 204
    ack = await linus.call("send_message", send(cid, "x", "c1"))
    assert ack["error"]["code"] == "not-found"


async def test_own_messages_are_never_unread_and_a_readers_mark_still_sends_a_receipt(
    world: ChatWorld,
) -> None:
    """unread_count counts the other members' live messages after the read mark; sending
    does not move the sender's read mark, so marking read later still tells the others."""
    ada, grace, hedy = await world.user(), await world.user(), await world.user()
    cid = await world.group(ada, [grace, hedy])
    a = await world.socket(ada)
    g = await world.socket(grace)

    async def unread(uid: str) -> int:
        listed = await world.call("GET", "/conversations", uid=uid)
        [item] = [c for c in listed.body["items"] if c["id"] == cid]
        single = await world.call("GET", f"/conversations/{cid}", uid=uid)
        assert single.body["unread_count"] == item["unread_count"]
        return int(item["unread_count"])

    await a.call("send_message", send(cid, "one", "a1"))
    await a.call("send_message", send(cid, "two", "a2"))
    await g.call("send_message", send(cid, "three", "g1"))
    assert (await unread(ada), await unread(grace), await unread(hedy)) == (1, 2, 3)
    # Grace reads everything, including her own seq 3: Ada hears of it.
    assert await g.call("mark_read", {"conversation_id": cid, "seq": 3}) == {"last_read_seq": 3}
    await a.wait_for("receipt", lambda r: r["kind"] == "read" and r["user_id"] == grace)
    await g.call("send_message", send(cid, "four", "g2"))
    assert (await unread(ada), await unread(grace)) == (2, 0)
    # A deleted message has nothing left to read.
    four = (await g.call("sync", {"conversation_id": cid, "after_seq": 3}))["messages"][0]
    deleted = await world.call("DELETE", f"/conversations/{cid}/messages/{four['id']}", uid=grace)
    assert deleted.status == 204
    assert await unread(ada) == 1


async def test_an_attachment_id_is_bounded_per_item(world: ChatWorld) -> None:
    """Each attachment id is 1–64 characters of [A-Za-z0-9_-]: anything else is refused as
    a malformed payload (socket: invalid-payload; REST: 422 validation problem), before any
    lookup — not as an unknown file."""
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    mine = await world.file(ada)
    a = await world.socket(ada)
    for n, bad in enumerate(("f_" + "a" * 63, "", "../f_1", "f 1", "f_\u00e9")):
        refused = await a.call("send_message", send(cid, "x", f"bad{n}", attachments=[mine, bad]))
        assert refused["error"]["code"] == "invalid-payload", (bad, refused)
        rest = await world.call(
            "POST",
            f"/conversations/{cid}/messages",
            uid=ada,
            body={"body": "x", "client_msg_id": f"rest{n}", "attachments": [mine, bad]},
        )
        assert rest.status == 422 and rest.body["type"].endswith("validation-error"), rest.body
        assert rest.body["errors"][0]["location"] == "/attachments/1", rest.body
    longest = "f_" + "a" * 62  # 64 characters: a well-formed id, just not a known file
    unknown = await a.call("send_message", send(cid, "x", "ok-shape", attachments=[longest]))
    assert unknown["error"]["code"] == "unknown-attachment"
    ok = await a.call("send_message", send(cid, "x", "fine", attachments=[mine]))
    assert ok["message"]["attachments"] == [mine] and ok["message"]["seq"] == 1

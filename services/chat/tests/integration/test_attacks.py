"""The adversarial review of chat, from outside: forged and foreign tokens, revoked sessions,
spoofed and replayed payloads, raw Engine.IO / Socket.IO frames (deep JSON, binary packets,
oversized packets, events without an ack id), removed members, cursor tampering. Everything
goes through the real gateway to a real chat replica on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import socketio

from chat_svc import keys
from switchyard.envelope import new_envelope
from switchyard.events.auth import SessionRevoked
from switchyard.testing import Stopwatch, eventually
from switchyard.testing.sockets import SocketClient
from switchyard.tokens import generate_signing_key

from ..support import ChatWorld

pytestmark = pytest.mark.integration


def send(cid: str, body: str, client_msg_id: str) -> dict[str, Any]:
    return {"conversation_id": cid, "body": body, "client_msg_id": client_msg_id}


async def test_foreign_forged_and_unsigned_tokens_are_refused(world: ChatWorld) -> None:
    ada = await world.user()
    keys = world.keys_server
    _, foreign_key = generate_signing_key()
    header = {"alg": "none", "typ": "at+jwt"}
    unsigned = (
        ".".join(
            __import__("base64").urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
            for part in (header, {"sub": ada, "aud": keys.audience, "iss": keys.issuer})
        )
        + "."
    )
    for token in (
        keys.signer_with(audience="some-other-api").issue(ada, []).token,
        keys.signer_with(issuer="https://evil.example").issue(ada, []).token,
        keys.signer_with(private_key=foreign_key).issue(ada, []).token,  # forged, same kid
        unsigned,
    ):
        client = SocketClient(world.base, token=token)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect()
        assert client.refusal["message"] == "unauthorized", token
    # A token in the Authorization header of the handshake is checked the same way.
    forged = keys.signer_with(private_key=foreign_key).issue(ada, []).token
    client = SocketClient(world.base, token=None, headers={"Authorization": f"Bearer {forged}"})
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()


async def _revoke(world: ChatWorld, user_id: str, session_id: str) -> None:
    now = datetime.now(UTC)
    await world.publisher.publish(
        new_envelope(
            SessionRevoked(
                user_id=user_id,
                session_id=session_id,
                expires_at=now + timedelta(minutes=15),
                revoked_at=now,
                reason="logout_all",
            ),
            service="auth",
        )
    )


async def test_a_revoked_session_is_disconnected_within_two_seconds(world: ChatWorld) -> None:
    ada = await world.user()
    session, other_session = uuid.uuid4().hex, uuid.uuid4().hex
    revoked_token = world.keys_server.token(ada, ["customer"], claims={"sid": session})
    a = await world.socket(ada, token=revoked_token)
    a2 = await world.socket(ada, token=revoked_token)
    kept = await world.socket(
        ada, token=world.keys_server.token(ada, ["customer"], claims={"sid": other_session})
    )
    await _revoke(world, ada, session)
    clock = Stopwatch()
    await a.wait_disconnected()
    await a2.wait_disconnected()
    # Two seconds of the time the CPUs were free: chat, the broker and this test share two
    # cores with other test workers (wait_disconnected gives up after 20 s).
    assert clock.within(2.0), clock.report()
    assert kept.connected
    client = SocketClient(world.base, token=revoked_token)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.refusal["data"]["reason"] == "revoked"
    response = await world.http.get(
        world.base + "/api/v1/chat/conversations",
        headers={"Authorization": f"Bearer {revoked_token}"},
    )
    assert response.status == 401


async def test_a_session_revoked_before_connect_is_refused(world: ChatWorld) -> None:
    """auth's list of revoked sessions (read at start) refuses a token too."""
    ada = await world.user()
    session = uuid.uuid4().hex
    await _revoke(world, ada, session)
    token = world.keys_server.token(ada, ["customer"], claims={"sid": session})

    async def refused() -> bool:
        client = SocketClient(world.base, token=token)
        try:
            await client.connect()
        except socketio.exceptions.ConnectionError:
            return bool(client.refusal and client.refusal["data"]["reason"] == "revoked")
        await client.disconnect()
        return False

    await eventually(refused)


async def test_spoofed_sender_ids_are_refused(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    ack = await a.call("send_message", {**send(cid, "from grace", "s1"), "sender_id": grace})
    assert ack["error"]["code"] == "invalid-payload"
    response = await world.call(
        "POST",
        f"/conversations/{cid}/messages",
        uid=ada,
        body={"body": "from grace", "client_msg_id": "s2", "sender_id": grace},
    )
    assert response.status == 422, response.body
    history = await world.call("GET", f"/conversations/{cid}/messages", uid=grace)
    assert history.body["items"] == []


async def test_a_replayed_client_msg_id_never_returns_someone_elses_message(
    world: ChatWorld,
) -> None:
    ada, grace, eve = await world.user(), await world.user(), await world.user()
    first = await world.direct(ada, grace)
    second = await world.direct(ada, eve)
    mine = await world.direct(eve, grace)
    a = await world.socket(ada)
    e = await world.socket(eve)
    original = (await a.call("send_message", send(first, "secret", "same-id")))["message"]
    # Eve replays Ada's id into Ada's conversation (not hers), and into her own.
    refused = await e.call("send_message", send(first, "x", "same-id"))
    assert refused["error"]["code"] == "not-found"
    own = (await e.call("send_message", send(mine, "mine", "same-id")))["message"]
    assert own["id"] != original["id"] and own["body"] == "mine" and own["sender_id"] == eve
    # Ada reuses her id in another conversation: one id, one message of hers (DESIGN), so
    # it is refused there, and her original is not handed out as an answer for Eve's chat.
    other = await a.call("send_message", send(second, "other", "same-id"))
    assert other == {
        "error": {"code": "client-msg-id-reused", "message": other["error"]["message"]}
    }
    assert (await a.call("join_conversation", {"conversation_id": second}))["last_seq"] == 0


async def test_a_removed_member_gets_no_more_events_of_the_group(start_world: Any) -> None:
    world: ChatWorld = await start_world(replicas=2)
    ada, grace, lin = await world.user(), await world.user(), await world.user()
    cid = await world.group(ada, [grace, lin])
    a = await world.socket(ada, client_ip="10.0.0.1")
    sockets = [await world.socket(lin, client_ip=f"10.0.1.{i}") for i in range(1, 5)]
    for s in [a, *sockets]:
        await s.call("join_conversation", {"conversation_id": cid})
    removed = await world.call("DELETE", f"/conversations/{cid}/members/{lin}", uid=ada)
    assert removed.status == 204, removed.body
    before = [len(s.received) for s in sockets]
    await a.call("typing", {"conversation_id": cid, "is_typing": True})
    await a.call("send_message", send(cid, "after removal", "r1"))
    g = await world.socket(grace)
    await g.call("join_conversation", {"conversation_id": cid})
    await g.call("typing", {"conversation_id": cid, "is_typing": True})
    await a.wait_for("typing", lambda t: t["user_id"] == grace)
    await asyncio.sleep(0.5)
    for s, count in zip(sockets, before, strict=True):
        leaked = [e for e, _ in s.received[count:] if e in ("typing", "message", "receipt")]
        assert leaked == [], leaked
    ack = await sockets[0].call("sync", {"conversation_id": cid, "after_seq": 0})
    assert ack["error"]["code"] == "not-found"


async def test_tampered_cursors_are_a_clear_400(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    for path in ("/conversations", f"/conversations/{cid}/messages"):
        for cursor in ("garbage", "eyJhZnRlciI6IDF9", "eyJiZWZvcmVfc2VxIjogIngifQ", "%00" * 10):
            response = await world.call("GET", f"{path}?cursor={cursor}", uid=ada)
            assert response.status == 400, (path, cursor, response.status, response.body)
            assert response.body["status"] == 400
    for query in ("before_seq=-1", "before_seq=abc", "limit=0", "limit=100000", "limit=x"):
        response = await world.call("GET", f"/conversations/{cid}/messages?{query}", uid=ada)
        assert response.status in (400, 422), (query, response.status, response.body)


class RawSocket:
    """A Socket.IO client speaking Engine.IO v4 frames itself over a WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, base: str, token: str) -> RawSocket:
        url = base.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        ws = await session.ws_connect(url, max_msg_size=0)
        opened = await ws.receive_str(timeout=10)
        assert opened.startswith("0{")
        await ws.send_str("40" + json.dumps({"token": token}))
        connected = await raw_next(ws)
        assert connected.startswith("40{"), connected
        return cls(ws)

    async def ack(self, ack_id: int, timeout: float = 10.0) -> Any:
        prefix = f"43{ack_id}"
        deadline = time.monotonic() + timeout
        while True:
            frame = await raw_next(self.ws, max(0.1, deadline - time.monotonic()))
            if frame.startswith(prefix + "["):
                return json.loads(frame[len(prefix) :])[0]


async def raw_next(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> str:
    """The next text frame that is not a ping (answered)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type} {msg.data!r}")
        if msg.data == "2":
            await ws.send_str("3")
            continue
        if msg.data == "1":  # Engine.IO close
            raise ConnectionError("closed by the server")
        return str(msg.data)


async def test_raw_malformed_frames_get_error_acks_or_a_close_never_a_crash(
    world: ChatWorld,
) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    raw = await RawSocket.open(world.http, world.base, world.token(ada))
    deep = "[" * 5000 + "]" * 5000
    frames = [
        ("421" + json.dumps(["send_message", {"conversation_id": cid}]), 1, "invalid-payload"),
        ("422" + json.dumps(["send_message", send(cid, "a", "b"), "extra"]), 2, "invalid-payload"),
        ("423" + json.dumps(["send_message", 1]), 3, "invalid-payload"),
        ("424" + json.dumps(["send_message", {**send(cid, "a", "b"), "body": None}]), 4, None),
        ("425" + json.dumps(["sync", {"conversation_id": cid, "after_seq": 1.5}]), 5, None),
        ("426" + json.dumps(["sync", {"conversation_id": cid, "after_seq": True}]), 6, None),
        ("427" + json.dumps(["mark_read", {"conversation_id": cid, "seq": 2**70}]), 7, None),
        ("428" + json.dumps(["join_conversation", {"conversation_id": "../../x"}]), 8, None),
        ("429" + json.dumps(["join_conversation", {"conversation_id": {"$ne": ""}}]), 9, None),
        ("4210" + json.dumps(["typing", {"conversation_id": [cid], "is_typing": 1}]), 10, None),
        (
            "4211" + json.dumps(["send_message", {**send(cid, "a", "b"), "attachments": "f"}]),
            11,
            None,
        ),
        ("4212" + json.dumps(["send_message", {**send(cid, "a", "x" * 129)}]), 12, None),
        ("4213" + json.dumps(["send_message", deep]), 13, None),
        ("4214" + json.dumps(["__proto__", {}]), 14, "unknown-event"),
    ]
    for frame, ack_id, code in frames:
        await raw.ws.send_str(frame)
        ack = await raw.ack(ack_id)
        assert "error" in ack, (frame[:80], ack)
        assert ack["error"]["code"] == (code or "invalid-payload"), (frame[:80], ack)
    # An event without an ack id is handled and answers nothing; a deeply nested JSON packet
    # and garbage packets never crash.
    await raw.ws.send_str("42" + json.dumps(["send_message", send(cid, "no ack", "n1")]))
    await raw.ws.send_str("42" + deep)
    await raw.ws.send_str("4" + "9" * 30)
    await raw.ws.send_str("42[")
    await raw.ws.send_str("\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
    g = await world.socket(grace)
    ok = await g.call("sync", {"conversation_id": cid, "after_seq": 0})
    assert [m["body"] for m in ok["messages"]] == ["no ack"]
    await raw.ws.close()


async def test_an_oversized_packet_closes_only_that_socket(world: ChatWorld) -> None:
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    raw = await RawSocket.open(world.http, world.base, world.token(ada))
    g = await world.socket(grace)
    await raw.ws.send_str("420" + json.dumps(["send_message", send(cid, "x" * 2_000_000, "big")]))
    with pytest.raises((ConnectionError, TimeoutError)):
        await raw.ack(0, timeout=5)
    ok = await g.call("send_message", send(cid, "fine", "f1"))
    assert ok["message"]["seq"] == 1


async def test_join_churn_and_typing_floods_are_bounded(start_world: Any) -> None:
    world: ChatWorld = await start_world(
        socket_event_rate=5.0, socket_event_burst=10, flood_disconnect_after=1000
    )
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    a = await world.socket(ada)
    g = await world.socket(grace)
    await g.call("join_conversation", {"conversation_id": cid})
    acks = await asyncio.gather(
        *(a.call("join_conversation", {"conversation_id": cid}) for _ in range(15)),
        *(a.call("typing", {"conversation_id": cid, "is_typing": i % 2 == 0}) for i in range(15)),
    )
    limited = [x for x in acks if "error" in x]
    assert limited and all(x["error"]["code"] == "rate-limited" for x in limited)
    await asyncio.sleep(1.0)
    # Typing forwarded to the peer stays throttled whatever the start/stop churn.
    starts = [t for t in g.events("typing") if t["is_typing"]]
    assert len(starts) <= 2, starts
    assert a.connected


async def test_one_user_cannot_open_sockets_without_bound(start_world: Any) -> None:
    world: ChatWorld = await start_world(max_sockets_per_user=3)
    ada, grace = await world.user(), await world.user()
    opened = [await world.socket(ada) for _ in range(3)]
    client = SocketClient(world.base, token=world.token(ada))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.refusal["data"]["reason"] == "too-many-sockets"
    assert all(s.connected for s in opened)
    await world.socket(grace)  # another user is not affected
    await opened[0].disconnect()

    async def room_again() -> bool:
        again = SocketClient(world.base, token=world.token(ada))
        try:
            await again.connect()
        except socketio.exceptions.ConnectionError:
            return False
        world.sockets.append(again)
        return True

    await eventually(room_again)


async def test_a_client_that_never_acks_does_not_grow_the_servers_ack_table(
    world: ChatWorld,
) -> None:
    """Each ``message`` to a socket carries an ack callback (the delivered receipt); a client
    that never answers must not make the server keep them without bound."""
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    manager = world.replicas[0].app[keys.SOCKETS].manager
    manager.max_pending_acks = 5
    a = await world.socket(ada)
    silent = await world.socket(grace, ack_events=False)
    for i in range(20):  # a loaded embedded store can take seconds for one send
        await a.call("send_message", send(cid, f"m{i}", f"c{i}"), timeout=30)
    await silent.wait_for("message", lambda m: m["message"]["seq"] == 20)
    pending = [len(table) - 1 for table in manager.callbacks.values()]
    assert pending and max(pending) <= 5, pending
    # Its messages still arrive; syncing is what marks them delivered.
    assert len(silent.events("message")) == 20


async def test_concurrent_senders_on_two_replicas_and_a_reconnect_lose_nothing(
    start_world: Any,
) -> None:
    world: ChatWorld = await start_world(
        replicas=2, socket_event_rate=1000.0, socket_event_burst=1000
    )
    first, second = (r.url for r in world.replicas)
    ada, lin, grace = await world.user(), await world.user(), await world.user()
    cid = await world.group(ada, [lin, grace])
    a = await world.socket(ada, url=first)
    b = await world.socket(lin, url=second)
    g = await world.socket(grace, url=first)
    per_sender = 40

    async def sender(client: SocketClient, tag: str) -> None:
        for n in range(per_sender):
            ack = await client.call("send_message", send(cid, f"{tag}{n}", f"{tag}{n}"))
            assert "message" in ack, ack

    sending = asyncio.gather(sender(a, "a"), sender(b, "b"))
    await g.wait_for("message", lambda m: m["message"]["seq"] >= 10)
    await g.disconnect()
    seen = {m["message"]["seq"] for m in g.events("message")}
    contiguous = 0
    while contiguous + 1 in seen:
        contiguous += 1
    g2 = await world.socket(grace, url=second)
    await sending
    synced: list[int] = []
    after = contiguous
    while True:
        page = await g2.call("sync", {"conversation_id": cid, "after_seq": after, "limit": 7})
        synced += [m["seq"] for m in page["messages"]]
        if not page["has_more"]:
            break
        after = synced[-1]
    total = 2 * per_sender
    assert synced == list(range(contiguous + 1, total + 1))
    assert seen | set(synced) == set(range(1, total + 1))


async def test_a_deleted_account_is_disconnected_on_every_replica(start_world: Any) -> None:
    world: ChatWorld = await start_world(replicas=2)
    ada, grace = await world.user(), await world.user()
    await world.direct(ada, grace)
    on_each = [await world.socket(grace, url=r.url) for r in world.replicas]
    await world.delete_user(grace)
    for s in on_each:
        await s.wait_disconnected()
    for replica in world.replicas:
        client = SocketClient(replica.url, token=world.token(grace))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect()
        assert client.refusal["data"]["reason"] == "account-deleted"


async def test_encoded_and_traversing_paths_reach_nothing(world: ChatWorld) -> None:
    ada, grace, eve = await world.user(), await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    for path in (
        f"/conversations/{cid}%2F..%2F..%2Fconversations",
        f"/conversations/..%2F{cid}/messages",
        f"/conversations/{cid}%00/messages",
        f"/conversations/%64{cid[1:]}/messages",
        f"/conversations/{cid.upper()}/messages",
    ):
        response = await world.call("GET", path, uid=eve)
        assert response.status in (400, 404), (path, response.status, response.body)
    response = await world.call("GET", f"/conversations/{cid}/messages", uid=eve)
    assert response.status == 404


async def test_an_account_deleted_while_its_socket_connects_is_still_disconnected(
    world: ChatWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion closes the sockets presence knows; a socket whose connection is being
    recorded at that moment must not slip through (the connect checks again after)."""
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    presence = world.chat.presence
    record = presence.connected
    release = asyncio.Event()

    async def slow_record(user_id: str, sid: str, now: datetime) -> Any:
        if user_id == grace:
            await release.wait()
        return await record(user_id, sid, now)

    monkeypatch.setattr(presence, "connected", slow_record)
    g = await world.socket(grace)
    await world.delete_user(grace)

    async def left() -> bool:
        view = await world.call("GET", f"/conversations/{cid}", uid=ada)
        return grace not in view.body["member_ids"]

    await eventually(left)
    await asyncio.sleep(0.3)  # the deletion's handler is done closing what it knew
    release.set()
    await g.wait_disconnected()  # 20 s: a loaded machine can take more than 5


async def test_rest_idor_and_malformed_bodies_are_refused_cleanly(world: ChatWorld) -> None:
    ada, grace, eve = await world.user(), await world.user(), await world.user()
    theirs = await world.direct(ada, grace)
    mine = await world.direct(eve, grace)
    sent = await world.call(
        "POST",
        f"/conversations/{theirs}/messages",
        uid=ada,
        body={"body": "s", "client_msg_id": "1"},
    )
    message_id = sent.body["message"]["id"]
    # Ada's message id through Eve's own conversation, and through Ada's.
    for method, path, body in (
        ("PATCH", f"/conversations/{mine}/messages/{message_id}", {"body": "pwned"}),
        ("DELETE", f"/conversations/{mine}/messages/{message_id}", None),
        ("PATCH", f"/conversations/{theirs}/messages/{message_id}", {"body": "pwned"}),
        ("DELETE", f"/conversations/{theirs}/messages/{message_id}", None),
        ("POST", f"/conversations/{theirs}/members", {"user_id": eve}),
        ("DELETE", f"/conversations/{theirs}/members/{ada}", None),
        ("PUT", f"/conversations/{theirs}/muted", {"muted": True}),
    ):
        response = await world.call(method, path, uid=eve, body=body)
        assert response.status == 404, (method, path, response.status, response.body)
    # Grace (a member) may not edit Ada's message either.
    response = await world.call(
        "PATCH", f"/conversations/{theirs}/messages/{message_id}", uid=grace, body={"body": "x"}
    )
    assert response.status == 403, response.body
    history = await world.call("GET", f"/conversations/{theirs}/messages", uid=ada)
    assert [m["body"] for m in history.body["items"]] == ["s"]

    headers = {"Authorization": f"Bearer {world.token(ada)}", "Content-Type": "application/json"}
    url = f"{world.base}/api/v1/chat/conversations/{theirs}/messages"
    for raw in (
        b"[1, 2]",
        b'{"body": "x", "client_msg_id": "2"',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"body": "\xff\xfe", "client_msg_id": "3"}',
        b'{"body": {"$gt": ""}, "client_msg_id": "4"}',
        b'{"body": "x", "client_msg_id": "5", "sender_id": "someone"}',
        b'{"body": "x", "client_msg_id": ["6"]}',
        b'{"body": "x", "client_msg_id": "7", "attachments": [{"$ne": 1}]}',
    ):
        async with world.http.post(url, data=raw, headers=headers) as response:
            assert 400 <= response.status < 500, (raw[:40], response.status)
            assert response.content_type == "application/problem+json", raw[:40]
    for body in (
        {"kind": "group", "title": "t", "member_ids": ["x" * 100_000]},
        {"kind": "group", "title": "t" * 201, "member_ids": [grace]},
        {"kind": "direct", "member_ids": [ada]},
        {"kind": "direct", "member_ids": [grace, eve]},
        {"kind": "channel", "member_ids": [grace]},
    ):
        response = await world.call("POST", "/conversations", uid=ada, body=body)
        assert response.status in (400, 413, 422), (str(body)[:60], response.status)
    listing = await world.call("GET", "/conversations", uid=ada)
    assert [c["id"] for c in listing.body["items"]] == [theirs]


async def test_malformed_connect_auth_and_polling_abuse(world: ChatWorld) -> None:
    ada = await world.user()
    ws_url = world.base.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    for auth in ('{"token": {"$ne": 1}}', '{"token": 12}', '"token"', "[1]", "{" * 3000):
        async with world.http.ws_connect(ws_url) as ws:
            await ws.receive_str(timeout=10)
            await ws.send_str("40" + auth)
            try:
                answer = await raw_next(ws)
            except ConnectionError:
                continue  # closed: refused

            assert answer.startswith("44"), (auth[:20], answer)
    # Polling: a handshake, then an oversized POST and garbage on that session.
    polling = world.base + "/socket.io/?EIO=4&transport=polling"
    async with world.http.get(polling) as response:
        assert response.status == 200
        opened = json.loads((await response.text())[1:])
    session_url = f"{polling}&sid={opened['sid']}"
    async with world.http.post(session_url, data="4" + "x" * 2_000_000) as response:
        assert 400 <= response.status < 500, response.status
    async with world.http.post(f"{polling}&sid=not-a-session", data="40") as response:
        assert 400 <= response.status < 500, response.status
    # The service still serves.
    s = await world.socket(ada, transports=["polling"])
    assert s.connected


@pytest.mark.parametrize(
    "packet", ['451-20["send_message",{"_placeholder":true,"num":0}]', '4599999-["x"]', "61-1[{}]"]
)
async def test_a_binary_packet_closes_the_socket_and_buffers_nothing(
    world: ChatWorld, packet: str
) -> None:
    """Chat speaks JSON only. A binary packet announces attachments the server would buffer
    until the last arrives (any number, each up to the packet limit): refused at once."""
    ada, grace = await world.user(), await world.user()
    cid = await world.direct(ada, grace)
    raw = await RawSocket.open(world.http, world.base, world.token(ada))
    await raw.ws.send_str(packet)
    with contextlib.suppress(ConnectionResetError):  # closed before all were sent: the point
        for _ in range(20):
            await raw.ws.send_bytes(b"\x00" * 100_000)
    with pytest.raises(ConnectionError):
        await raw_next(raw.ws, timeout=15)
    server = world.replicas[0].app[keys.SOCKETS]
    assert not server._binary_packet
    g = await world.socket(grace)
    ok = await g.call("send_message", send(cid, "fine", "f1"))
    assert ok["message"]["seq"] == 1


async def test_an_engineio_session_that_never_connects_is_closed(start_world: Any) -> None:
    """Open the transport, answer every ping, never send the Socket.IO connect (no token):
    the server does not keep such a session for ever."""
    world: ChatWorld = await start_world(socketio_connect_timeout=1.0)
    url = world.base.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    async with world.http.ws_connect(url) as ws:
        await ws.receive_str(timeout=10)
        clock = Stopwatch()
        with pytest.raises(ConnectionError):
            await raw_next(ws, timeout=10)
        # Closed after the 1 s connect timeout, not at the 10 s read deadline; the bound is
        # on the time the CPUs were free (the machine is shared with other test workers).
        assert clock.within(5), clock.report()

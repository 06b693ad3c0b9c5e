"""Store contract of the chat service: the query and update shapes its repositories rely on,
pinned on the embedded server (and real MongoDB when one is reachable)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from chat_svc.adapters.presence import Presence
from chat_svc.adapters.store import ChatStore, store_indexes
from switchyard.envelope import utcnow
from switchyard.mongo import stored_time, time_range
from switchyard.mongo.client import ensure_indexes

pytestmark = pytest.mark.integration


async def test_seq_reservation_checks_membership_in_the_array_and_never_repeats(mongo_db):
    col = mongo_db["conversations"]
    await col.insert_one({"_id": "c1", "member_ids": ["ada", "grace"], "last_seq": 0})

    async def reserve(user: str):
        return await col.find_one_and_update(
            {"_id": "c1", "member_ids": user},
            {"$inc": {"last_seq": 1}, "$set": {"reserved": stored_time(utcnow())}},
            return_document=ReturnDocument.AFTER,
        )

    results = await asyncio.gather(*(reserve("ada" if n % 2 else "grace") for n in range(40)))
    assert sorted(r["last_seq"] for r in results) == list(range(1, 41))
    assert await reserve("eve") is None  # not in the array: no match, nothing taken
    assert await reserve("ad") is None  # element equality, not a substring
    assert (await col.find_one({"_id": "c1"}))["last_seq"] == 40


async def test_forward_only_marks_with_a_guarded_lt_update(mongo_db):
    col = mongo_db["members"]
    await col.insert_one({"_id": "c1|ada", "last_read_seq": 0})

    async def advance(seq: int) -> int:
        result = await col.update_one(
            {"_id": "c1|ada", "last_read_seq": {"$lt": seq}}, {"$set": {"last_read_seq": seq}}
        )
        return result.modified_count

    moved = await asyncio.gather(*(advance(seq) for seq in [5, 3, 9, 1, 9, 7]))
    assert (await col.find_one({"_id": "c1|ada"}))["last_read_seq"] == 9
    assert sum(moved) >= 1 and await advance(4) == 0


async def test_unique_seq_and_client_id_indexes_and_ordered_reads(mongo_db):
    await ensure_indexes(mongo_db, store_indexes())
    store = ChatStore(mongo_db)
    base = {"conversation_id": "c1", "body": "x", "attachments": [], "deleted": False}
    now = utcnow()
    for seq in (1, 2, 4):
        await mongo_db["messages"].insert_one(
            {
                **base,
                "_id": f"m{seq}",
                "seq": seq,
                "sender_id": "ada",
                "client_msg_id": f"k{seq}",
                "created": stored_time(now),
            }
        )
    with pytest.raises(DuplicateKeyError):
        await mongo_db["messages"].insert_one(
            {
                **base,
                "_id": "dup-seq",
                "seq": 2,
                "sender_id": "grace",
                "client_msg_id": "z",
                "created": stored_time(now),
            }
        )
    with pytest.raises(DuplicateKeyError):
        await mongo_db["messages"].insert_one(
            {
                **base,
                "_id": "dup-client",
                "seq": 9,
                "sender_id": "ada",
                "client_msg_id": "k1",
                "created": stored_time(now),
            }
        )
    # The index is per conversation (a unique (sender, client id) index made sends 3-4x
    # slower on the embedded store): across conversations the handler's check refuses it.
    await mongo_db["messages"].insert_one(
        {
            **base,
            "_id": "dup-client-elsewhere",
            "conversation_id": "c2",
            "seq": 1,
            "sender_id": "ada",
            "client_msg_id": "k1",
            "created": stored_time(now),
        }
    )
    # the same client_msg_id from another sender is another message
    await mongo_db["messages"].insert_one(
        {
            **base,
            "_id": "m5",
            "seq": 5,
            "sender_id": "grace",
            "client_msg_id": "k1",
            "created": stored_time(now),
        }
    )
    assert [m.seq for m in await store.after("c1", 0, 10)] == [1, 2, 4, 5]
    assert [m.seq for m in await store.before("c1", 5, 2)] == [4, 2]
    await store.fill_void("c1", 3, now)
    await store.fill_void("c1", 3, now)  # idempotent
    assert [m.seq for m in await store.after("c1", 2, 10)] == [3, 4, 5]
    assert (await store.at_seq("c1", 3)).deleted  # type: ignore[union-attr]
    await store.fill_void("c2", 3, now)  # the same seq of another conversation
    assert (await store.at_seq("c2", 3)).deleted  # type: ignore[union-attr]
    latest = await store.latest_visible("c1")
    assert latest is not None and latest.seq == 5


async def test_member_listing_by_user_pages_by_conversation_id(mongo_db):
    await ensure_indexes(mongo_db, store_indexes())
    store = ChatStore(mongo_db)
    now = utcnow()
    for cid in ("c3", "c1", "c2", "c4"):
        await store.activate_member(cid, "ada", now)
    await store.activate_member("c9", "grace", now)
    await store.deactivate_member("c2", "ada")
    assert await store.page_of_member("ada", None, 2) == ["c1", "c3"]
    assert await store.page_of_member("ada", "c3", 2) == ["c4"]
    await store.activate_member("c2", "ada", now)  # re-joining keeps the marks
    cursor = mongo_db["members"].find({"user_id": "ada"}).sort("conversation_id", ASCENDING)
    assert [d["conversation_id"] async for d in cursor] == ["c1", "c2", "c3", "c4"]


async def test_presence_expiry_and_generation_guard(mongo_db):
    now = utcnow()
    one = Presence(mongo_db, replica="r1", ttl=5)
    two = Presence(mongo_db, replica="r2", ttl=5)
    assert (await one.connected("ada", "s1", now)).online  # type: ignore[union-attr]
    assert await two.connected("ada", "s2", now) is None  # already online
    assert await one.disconnected("ada", "s1", now) is None  # s2 still live
    later = now + timedelta(seconds=10)  # r2 died: its connection was never refreshed
    await one.heartbeat(later)
    changes = await one.sweep(later)
    assert [(c.user_id, c.online) for c in changes] == [("ada", False)]
    assert await two.sweep(later) == []  # swept once
    assert await one.online_among(["ada"]) == set()
    found = await mongo_db["connections"].find_one(
        {"$and": [{"user_id": "ada"}, time_range("expires", after=later)]}
    )
    assert found is None


async def test_a_crash_while_creating_a_conversation_leaves_none_that_a_member_cannot_list(
    mongo_db, monkeypatch
):
    """Member rows are written before the conversation: a process dying between the writes
    (here: the second member's row fails) leaves no conversation, only harmless member rows
    the listing skips; the retry creates it, listed by every member."""
    from chat_svc.domain.conversations import Conversation, direct_conversation_id
    from switchyard.envelope import new_envelope
    from switchyard.events.chat import ConversationCreated

    await ensure_indexes(mongo_db, store_indexes())
    store = ChatStore(mongo_db)
    now = utcnow()
    cid = direct_conversation_id("ada", "grace")
    conversation = Conversation(cid, "direct", None, ["ada", "grace"], [], "ada", 0, now)
    event = new_envelope(
        ConversationCreated(
            conversation_id=cid,
            kind="direct",
            member_ids=["ada", "grace"],
            created_by="ada",
            created_at=now,
        ),
        service="chat",
        subject=cid,
    )
    activate = store.activate_member

    async def dies_at_grace(conversation_id: str, user_id: str, when) -> None:  # type: ignore[no-untyped-def]
        if user_id == "grace":
            raise ConnectionError("the process died here")
        await activate(conversation_id, user_id, when)

    monkeypatch.setattr(store, "activate_member", dies_at_grace)
    with pytest.raises(ConnectionError):
        await store.create_conversation(conversation, event, now)
    stored = await store.get(cid)
    listed = {uid: await store.page_of_member(uid, None, 10) for uid in ("ada", "grace")}
    # Whatever is stored, no member is left out of a conversation that exists.
    assert stored is None or all(cid in ids for ids in listed.values()), listed

    monkeypatch.setattr(store, "activate_member", activate)
    assert await store.create_conversation(conversation, event, now)  # the client's retry
    assert [await store.page_of_member(uid, None, 10) for uid in ("ada", "grace")] == [[cid]] * 2
    assert await store.create_conversation(conversation, event, now) is False


async def test_member_rows_lost_before_rows_came_first_are_restored(mongo_db):
    """A conversation stored by the old order (conversation first) without Grace's row: the
    repair activates exactly the missing rows and keeps existing marks."""
    from chat_svc.domain.conversations import Conversation

    await ensure_indexes(mongo_db, store_indexes())
    store = ChatStore(mongo_db)
    now = utcnow()
    conversation = Conversation("c1", "direct", None, ["ada", "grace"], [], "ada", 4, now)
    await store.activate_member("c1", "ada", now)
    await store.advance("c1", "ada", "last_read_seq", 3)
    assert await store.page_of_member("grace", None, 10) == []
    await store.restore_member_rows(conversation, now)
    assert await store.page_of_member("grace", None, 10) == ["c1"]
    assert (await store.member_state("c1", "ada"))["last_read_seq"] == 3


async def test_delivered_marks_advance_in_one_bulk_write_and_report_which_moved(mongo_db):
    """Batched delivery acks: each mark only moves forward, and the caller learns exactly
    which moved (a receipt for each of those, none for the others)."""
    await ensure_indexes(mongo_db, store_indexes())
    store = ChatStore(mongo_db)
    now = utcnow()
    for cid, uid in (("c1", "ada"), ("c1", "grace"), ("c2", "ada")):
        await store.activate_member(cid, uid, now)
    await store.advance("c1", "grace", "last_delivered_seq", 5)
    field = "last_delivered_seq"
    moved = await store.advance_many(
        field, [("c1", "ada", 3), ("c1", "grace", 4), ("c2", "ada", 1)]
    )
    assert moved == {("c1", "ada"), ("c2", "ada")}  # grace is already past 4
    assert await store.advance_many(field, [("c1", "ada", 9), ("c2", "ada", 2)]) == {
        ("c1", "ada"),
        ("c2", "ada"),
    }
    assert await store.advance_many(field, [("c1", "ada", 9)]) == set()  # no repeat
    states = [
        await store.member_state(c, u) for c, u in (("c1", "ada"), ("c1", "grace"), ("c2", "ada"))
    ]
    assert [s[field] for s in states] == [9, 5, 2]

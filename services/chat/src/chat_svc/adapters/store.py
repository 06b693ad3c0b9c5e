"""Conversations, members and messages in the chat database.

Single-document atomicity only (DESIGN §2):
- ``conversations``: the member list (the one source of membership, replaced whole under a
  ``version`` guard) and ``last_seq``, taken with ``$inc`` — the seq reservation and the
  membership check are one atomic update;
- ``members``: one document per (conversation, user) with the member's own state —
  ``last_read_seq`` / ``last_delivered_seq`` only move forward through guarded updates
  (``{"last_read_seq": {"$lt": seq}}``), ``muted``, and ``active`` for the listing by user;
- ``messages``: unique (conversation, seq) and (conversation, sender, client_msg_id); a
  client id names one message of its sender in any conversation (DESIGN §5), checked before
  the insert (see ``store_indexes``); each message document carries its own events in its
  outbox (``with_events``/``stage_events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat_svc.domain.conversations import VOID_SENDER, Conversation, Message
from switchyard.envelope import Envelope
from switchyard.mongo import loaded_time, stored_time, time_range
from switchyard.mongo.client import Document, Index, asc
from switchyard.outbox import stage_events, with_events

CONVERSATIONS = "conversations"
MEMBERS = "members"
MESSAGES = "messages"
OUTBOX_COLLECTIONS = [CONVERSATIONS, MESSAGES]


def store_indexes() -> list[Index]:
    return [
        Index(MESSAGES, asc("conversation_id", "seq"), unique=True),
        # A client id names one message of its sender (DESIGN §5): a resend to the same
        # conversation is the original, to another one is refused (``client-msg-id-reused``)
        # by the check before the insert, which reads through the sender index. The unique
        # index is per conversation: a unique (sender_id, client_msg_id) index made sends 3-4x
        # slower on the embedded store (chat benchmark: saturation 37-51 vs 138-154 msg/s,
        # p50 at 40 msg/s 10-18 s vs 16-27 ms), so two *concurrent* sends of one client id to
        # two conversations (a client bug) can both be stored.
        Index(MESSAGES, asc("conversation_id", "sender_id", "client_msg_id"), unique=True),
        Index(MESSAGES, asc("sender_id")),
        Index(MEMBERS, asc("user_id", "active", "conversation_id")),
        Index(MEMBERS, asc("conversation_id")),
    ]


def member_key(conversation_id: str, user_id: str) -> str:
    return f"{conversation_id}|{user_id}"


def conversation_from(doc: Document) -> Conversation:
    return Conversation(
        id=doc["_id"],
        kind=doc["kind"],
        title=doc.get("title"),
        member_ids=list(doc.get("member_ids", [])),
        admin_ids=list(doc.get("admin_ids", [])),
        created_by=doc["created_by"],
        last_seq=int(doc.get("last_seq", 0)),
        created_at=loaded_time(doc["created"]),
        version=int(doc.get("version", 0)),
    )


def message_from(doc: Document) -> Message:
    if doc.get("void"):
        # Its stored client id only keeps the unique index; voids stored before VOID_SENDER
        # had an empty sender: both show as VOID_SENDER without a client_msg_id.
        return Message(
            id=doc["_id"],
            conversation_id=doc["conversation_id"],
            seq=int(doc["seq"]),
            sender_id=VOID_SENDER,
            body="",
            attachments=[],
            client_msg_id=None,
            created_at=loaded_time(doc["created"]),
            deleted=True,
            void=True,
        )
    return Message(
        id=doc["_id"],
        conversation_id=doc["conversation_id"],
        seq=int(doc["seq"]),
        sender_id=doc["sender_id"],
        body=doc.get("body", ""),
        attachments=list(doc.get("attachments", [])),
        client_msg_id=doc.get("client_msg_id"),
        created_at=loaded_time(doc["created"]),
        edited_at=loaded_time(doc["edited"]) if doc.get("edited") else None,
        deleted=bool(doc.get("deleted", False)),
    )


class ChatStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.conversations: AsyncCollection[Document] = db[CONVERSATIONS]
        self.members: AsyncCollection[Document] = db[MEMBERS]
        self.messages: AsyncCollection[Document] = db[MESSAGES]

    # conversations ------------------------------------------------------------------

    async def create_conversation(
        self, conversation: Conversation, event: Envelope, now: datetime
    ) -> bool:
        """Insert it with its ``chat.conversation.created`` event; False when the id exists.

        The members' rows (the listing by user) are written first: a process dying between
        the writes leaves rows of a conversation that does not exist, which the listing
        skips and the client's retry completes — never a conversation a member cannot list.
        Invariant: every id in a conversation's ``member_ids`` has an active member row."""
        for user_id in conversation.member_ids:
            await self.activate_member(conversation.id, user_id, now)
        doc = {
            "_id": conversation.id,
            "kind": conversation.kind,
            "title": conversation.title,
            "member_ids": list(conversation.member_ids),
            "admin_ids": list(conversation.admin_ids),
            "created_by": conversation.created_by,
            "last_seq": 0,
            "version": 0,
            "created": stored_time(now),
        }
        try:
            await self.conversations.insert_one(with_events(doc, [event]))
        except DuplicateKeyError:
            return False
        return True

    async def restore_member_rows(self, conversation: Conversation, now: datetime) -> None:
        """Activate the rows of members that lack one: conversations created before member
        rows were written first could have lost them to a crash."""
        keys = [member_key(conversation.id, uid) for uid in conversation.member_ids]
        present = {
            doc["user_id"]
            async for doc in self.members.find(
                {"_id": {"$in": keys}, "active": True}, {"user_id": 1}
            )
        }
        for user_id in conversation.member_ids:
            if user_id not in present:
                await self.activate_member(conversation.id, user_id, now)

    async def get(self, conversation_id: str) -> Conversation | None:
        doc = await self.conversations.find_one({"_id": conversation_id}, {"outbox": 0})
        return conversation_from(doc) if doc else None

    async def get_for_member(self, conversation_id: str, user_id: str) -> Conversation | None:
        """The conversation when ``user_id`` is one of its members, else None."""
        conversation = await self.get(conversation_id)
        if conversation is None or not conversation.is_member(user_id):
            return None
        return conversation

    async def get_many(self, ids: Sequence[str]) -> dict[str, Conversation]:
        if not ids:
            return {}
        cursor = self.conversations.find({"_id": {"$in": list(ids)}}, {"outbox": 0})
        return {doc["_id"]: conversation_from(doc) async for doc in cursor}

    async def replace_members(
        self,
        conversation: Conversation,
        member_ids: list[str],
        admin_ids: list[str],
        now: datetime,
    ) -> bool:
        """Whole-array replacement guarded by ``version``: False when someone changed it first."""
        result = await self.conversations.update_one(
            {"_id": conversation.id, "version": conversation.version},
            {
                "$set": {
                    "member_ids": member_ids,
                    "admin_ids": admin_ids,
                    "version": conversation.version + 1,
                    "updated": stored_time(now),
                }
            },
        )
        return result.modified_count == 1

    async def reserve_seq(
        self, conversation_id: str, user_id: str, now: datetime
    ) -> Document | None:
        """Take the next seq of a conversation ``user_id`` belongs to: one atomic update that
        checks membership and ``$inc``s ``last_seq``. None: no such conversation for them."""
        return await self.conversations.find_one_and_update(
            {"_id": conversation_id, "member_ids": user_id},
            {"$inc": {"last_seq": 1}, "$set": {"reserved": stored_time(now)}},
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )

    # members ------------------------------------------------------------------------

    async def activate_member(self, conversation_id: str, user_id: str, now: datetime) -> None:
        await self.members.update_one(
            {"_id": member_key(conversation_id, user_id)},
            {
                "$set": {"active": True, "joined": stored_time(now)},
                "$setOnInsert": {
                    "conversation_id": conversation_id,
                    "user_id": user_id,
                    "last_read_seq": 0,
                    "last_delivered_seq": 0,
                    "muted": False,
                },
            },
            upsert=True,
        )

    async def deactivate_member(self, conversation_id: str, user_id: str) -> None:
        await self.members.update_one(
            {"_id": member_key(conversation_id, user_id)}, {"$set": {"active": False}}
        )

    async def member_state(self, conversation_id: str, user_id: str) -> Document:
        doc = await self.members.find_one({"_id": member_key(conversation_id, user_id)})
        return doc or {"last_read_seq": 0, "last_delivered_seq": 0, "muted": False}

    async def member_states(
        self, conversation_ids: Sequence[str], user_id: str
    ) -> dict[str, Document]:
        keys = [member_key(cid, user_id) for cid in conversation_ids]
        if not keys:
            return {}
        return {
            doc["conversation_id"]: doc async for doc in self.members.find({"_id": {"$in": keys}})
        }

    async def advance(self, conversation_id: str, user_id: str, field: str, seq: int) -> bool:
        """Move ``field`` (``last_read_seq`` / ``last_delivered_seq``) forward to ``seq``;
        True when it moved (a guarded update: never backwards, exact under races)."""
        result = await self.members.update_one(
            {"_id": member_key(conversation_id, user_id), field: {"$lt": seq}},
            {"$set": {field: seq}},
        )
        return result.modified_count == 1

    async def advance_many(
        self, field: str, marks: Sequence[tuple[str, str, int]]
    ) -> set[tuple[str, str]]:
        """:meth:`advance` for many (conversation, user, seq) at once, in one bulk write;
        the (conversation, user) pairs whose mark moved. When not all moved, the marks are
        read back: one that now equals its seq counts as moved (another writer moving it to
        exactly that seq at the same moment makes a repeated receipt, never a missing one)."""
        if not marks:
            return set()
        if len(marks) == 1:
            cid, uid, seq = marks[0]
            return {(cid, uid)} if await self.advance(cid, uid, field, seq) else set()
        result = await self.members.bulk_write(
            [
                UpdateOne(
                    {"_id": member_key(cid, uid), field: {"$lt": seq}}, {"$set": {field: seq}}
                )
                for cid, uid, seq in marks
            ],
            ordered=False,
        )
        if result.modified_count == len(marks):
            return {(cid, uid) for cid, uid, _ in marks}
        wanted = {member_key(cid, uid): seq for cid, uid, seq in marks}
        cursor = self.members.find(
            {"_id": {"$in": list(wanted)}}, {field: 1, "conversation_id": 1, "user_id": 1}
        )
        return {
            (doc["conversation_id"], doc["user_id"])
            async for doc in cursor
            if doc.get(field) == wanted[doc["_id"]]
        }

    async def set_muted(self, conversation_id: str, user_id: str, muted: bool) -> None:
        await self.members.update_one(
            {"_id": member_key(conversation_id, user_id)}, {"$set": {"muted": muted}}
        )

    async def page_of_member(self, user_id: str, after: str | None, limit: int) -> list[str]:
        """Conversation ids of ``user_id`` (active memberships), by id, after a cursor."""
        query: Document = {"user_id": user_id, "active": True}
        if after is not None:
            query["conversation_id"] = {"$gt": after}
        cursor = (
            self.members.find(query, {"conversation_id": 1})
            .sort("conversation_id", ASCENDING)
            .limit(limit)
        )
        return [doc["conversation_id"] async for doc in cursor]

    async def conversations_of(self, user_id: str) -> list[str]:
        cursor = self.members.find({"user_id": user_id, "active": True}, {"conversation_id": 1})
        return [doc["conversation_id"] async for doc in cursor]

    # messages -----------------------------------------------------------------------

    async def insert_message(self, doc: Document, events: Sequence[Envelope]) -> None:
        """Raises DuplicateKeyError when the seq or the (sender, client_msg_id) is taken."""
        await self.messages.insert_one(with_events(doc, events))

    async def by_client_id(self, sender_id: str, client_msg_id: str) -> Message | None:
        """The sender's message with this client id, in whichever conversation."""
        doc = await self.messages.find_one(
            {"sender_id": sender_id, "client_msg_id": client_msg_id}, {"outbox": 0}
        )
        return message_from(doc) if doc else None

    async def message(self, conversation_id: str, message_id: str) -> Message | None:
        doc = await self.messages.find_one(
            {"_id": message_id, "conversation_id": conversation_id}, {"outbox": 0}
        )
        return message_from(doc) if doc else None

    async def at_seq(self, conversation_id: str, seq: int) -> Message | None:
        doc = await self.messages.find_one(
            {"conversation_id": conversation_id, "seq": seq}, {"outbox": 0}
        )
        return message_from(doc) if doc else None

    async def after(self, conversation_id: str, after_seq: int, limit: int) -> list[Message]:
        """Messages with seq > ``after_seq``, ascending (may contain holes: the caller checks)."""
        cursor = (
            self.messages.find(
                {"conversation_id": conversation_id, "seq": {"$gt": after_seq}}, {"outbox": 0}
            )
            .sort("seq", ASCENDING)
            .limit(limit)
        )
        return [message_from(doc) async for doc in cursor]

    async def before(
        self, conversation_id: str, before_seq: int | None, limit: int
    ) -> list[Message]:
        """Messages with seq < ``before_seq`` (the newest when None), newest first."""
        query: Document = {"conversation_id": conversation_id}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        cursor = self.messages.find(query, {"outbox": 0}).sort("seq", DESCENDING).limit(limit)
        return [message_from(doc) async for doc in cursor]

    async def latest_visible(self, conversation_id: str) -> Message | None:
        cursor = (
            self.messages.find(
                {"conversation_id": conversation_id, "deleted": False}, {"outbox": 0}
            )
            .sort("seq", DESCENDING)
            .limit(1)
        )
        async for doc in cursor:
            return message_from(doc)
        return None

    async def unread_count(self, conversation_id: str, user_id: str, after_seq: int) -> int:
        """Messages after ``after_seq`` that ``user_id`` has to read: other members' and not
        deleted (the user's own messages are never unread for them; a void is deleted)."""
        return await self.messages.count_documents(
            {
                "conversation_id": conversation_id,
                "seq": {"$gt": after_seq},
                "sender_id": {"$ne": user_id},
                "deleted": False,
            }
        )

    async def fill_void(self, conversation_id: str, seq: int, now: datetime) -> None:
        """Fill a reserved seq whose message will never land with a deleted placeholder
        (gap-free numbering); a real message that lands first wins the unique index."""
        try:
            await self.messages.insert_one(
                {
                    "_id": f"v_{conversation_id}_{seq}",
                    "conversation_id": conversation_id,
                    "seq": seq,
                    "sender_id": VOID_SENDER,
                    # Unique under (sender_id, client_msg_id) across conversations.
                    "client_msg_id": f"void:{conversation_id}:{seq}",
                    "body": "",
                    "attachments": [],
                    "deleted": True,
                    "void": True,
                    "created": stored_time(now),
                }
            )
        except DuplicateKeyError:
            return

    async def update_message(
        self,
        conversation_id: str,
        message_id: str,
        sender_id: str,
        update: Document,
        events: Sequence[Envelope],
    ) -> Message | None:
        """Apply ``update`` to the sender's own, not deleted message (with its events)."""
        doc = await self.messages.find_one_and_update(
            {
                "_id": message_id,
                "conversation_id": conversation_id,
                "sender_id": sender_id,
                "deleted": False,
            },
            stage_events(update, events),
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
        return message_from(doc) if doc else None

    async def reserved_before(self, conversation_id: str, moment: datetime) -> bool:
        """True when the conversation's last seq reservation is older than ``moment``."""
        doc = await self.conversations.find_one(
            {"$and": [{"_id": conversation_id}, time_range("reserved", before=moment)]},
            {"_id": 1},
        )
        return doc is not None

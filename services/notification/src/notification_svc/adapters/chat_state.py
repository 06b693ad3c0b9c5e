"""``notification_chat_state``: per (user, conversation) what chat pushes need to know.

One document per pair (``_id`` = ``<user>|<conversation>``), every change a
single-document guarded update:

- ``muted`` — the user muted the conversation (no push, no in-app);
- ``read_seq`` — how far the user has read (raised only, never lowered);
- the push window: ``window_until`` (one push per window), ``opened_by`` (the message
  that opened it, so its redelivery is recognised), ``folded`` (messages that arrived
  inside the window, keyed by message id) with ``has_folded``;
- a digest being sent: ``flushing`` (the folded messages taken), ``flush_id``,
  ``flush_lease`` (a crashed sender's digest is taken over after it), all guarded
  by ``version``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.mongo import stored_time, time_range
from switchyard.mongo.client import Document, Index, asc

COLLECTION = "notification_chat_state"


def chat_state_indexes() -> list[Index]:
    return [Index(COLLECTION, asc("has_folded")), Index(COLLECTION, asc("user_id"))]


def _key(user_id: str, conversation_id: str) -> str:
    return f"{user_id}|{conversation_id}"


def _field(message_id: str) -> str:
    return message_id.replace(".", "_").replace("$", "_")


class Window(enum.Enum):
    OPENED = "opened"  # push now
    FOLDED = "folded"  # inside an open window: the digest carries it


@dataclass(frozen=True)
class Folded:
    message_id: str
    seq: int
    sender_id: str


@dataclass(frozen=True)
class ChatState:
    user_id: str
    conversation_id: str
    muted: bool = False
    read_seq: int = 0
    version: int = 0
    folded: tuple[Folded, ...] = ()
    flushing: tuple[Folded, ...] = ()
    flush_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _folded(entries: Mapping[str, Any] | None) -> tuple[Folded, ...]:
    return tuple(
        sorted(
            (
                Folded(e["message_id"], int(e["seq"]), e["sender_id"])
                for e in (entries or {}).values()
            ),
            key=lambda f: f.seq,
        )
    )


def _state(doc: Mapping[str, Any]) -> ChatState:
    return ChatState(
        user_id=doc["user_id"],
        conversation_id=doc["conversation_id"],
        muted=bool(doc.get("muted", False)),
        read_seq=int(doc.get("read_seq", 0)),
        version=int(doc.get("version", 0)),
        folded=_folded(doc.get("folded")),
        flushing=_folded(doc.get("flushing")),
        flush_id=doc.get("flush_id"),
    )


class ChatStateStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def get(self, user_id: str, conversation_id: str) -> ChatState:
        doc = await self.collection.find_one({"_id": _key(user_id, conversation_id)})
        return _state(doc) if doc else ChatState(user_id, conversation_id)

    async def _ensure(self, user_id: str, conversation_id: str) -> None:
        try:
            await self.collection.insert_one(
                {
                    "_id": _key(user_id, conversation_id),
                    "user_id": user_id,
                    "conversation_id": conversation_id,
                    "version": 0,
                    "has_folded": False,
                }
            )
        except DuplicateKeyError:
            pass  # it exists: what _ensure is for

    async def _open_or_create(
        self,
        user_id: str,
        conversation_id: str,
        until: datetime,
        message_id: str,
        query: Document,
        update: Document,
    ) -> int:
        """The guarded window update (1 if it opened the window); a missing document is created
        with the window open — one round trip on either common path."""
        result = await self.collection.update_one(query, update)
        if result.matched_count:
            return 1
        try:
            await self.collection.insert_one(
                {
                    "_id": _key(user_id, conversation_id),
                    "user_id": user_id,
                    "conversation_id": conversation_id,
                    "version": 1,
                    "has_folded": False,
                    "window_until": stored_time(until),
                    "opened_by": message_id,
                }
            )
            return 1
        except DuplicateKeyError:  # it exists: the guard decides (again, it may have changed)
            return (await self.collection.update_one(query, update)).matched_count

    async def set_muted(self, user_id: str, conversation_id: str, muted: bool) -> None:
        await self._ensure(user_id, conversation_id)
        await self.collection.update_one(
            {"_id": _key(user_id, conversation_id)}, {"$set": {"muted": muted}}
        )

    async def muted_conversations(self, user_id: str) -> list[str]:
        cursor = self.collection.find({"user_id": user_id, "muted": True})
        return sorted([doc["conversation_id"] async for doc in cursor])

    async def mark_read(self, user_id: str, conversation_id: str, seq: int) -> None:
        """Raise the user's read mark to ``seq`` (a lower one changes nothing).

        Only an existing document is updated: without one, no window or digest is pending
        for the user, and every later message has a higher seq than this mark anyway."""
        await self.collection.update_one(
            {
                "$and": [
                    {"_id": _key(user_id, conversation_id)},
                    {"$or": [{"read_seq": {"$exists": False}}, {"read_seq": {"$lt": seq}}]},
                ]
            },
            {"$set": {"read_seq": seq}},
        )

    async def open_window(
        self,
        user_id: str,
        conversation_id: str,
        *,
        message_id: str,
        seq: int,
        sender_id: str,
        now: datetime,
        window: timedelta,
    ) -> Window:
        """Open a push window for this message, or fold the message into the open one."""
        key = _key(user_id, conversation_id)
        opened = await self._open_or_create(
            user_id,
            conversation_id,
            now + window,
            message_id,
            {
                "$and": [
                    {"_id": key},
                    {
                        "$or": [
                            {"window_until": {"$exists": False}},
                            time_range("window_until", before=now),
                            {"opened_by": message_id},  # our own window: a redelivery
                        ]
                    },
                ]
            },
            {
                "$set": {"window_until": stored_time(now + window), "opened_by": message_id},
                "$inc": {"version": 1},
            },
        )
        if opened == 1:
            return Window.OPENED
        await self.collection.update_one(
            {"_id": key},
            {
                "$set": {
                    f"folded.{_field(message_id)}": {
                        "message_id": message_id,
                        "seq": seq,
                        "sender_id": sender_id,
                    },
                    "has_folded": True,
                },
                "$inc": {"version": 1},
            },
        )
        return Window.FOLDED

    async def due_digests(self, now: datetime, limit: int = 100) -> list[ChatState]:
        """Windows that closed with folded messages, and digests whose sender's lease ran out."""
        closed = self.collection.find(
            {"has_folded": True, **time_range("window_until", before=now)}
        ).limit(limit)
        stale = self.collection.find(
            {"flush_id": {"$exists": True}, **time_range("flush_lease", before=now)}
        ).limit(limit)
        found = {doc["_id"]: _state(doc) async for doc in closed}
        found.update({doc["_id"]: _state(doc) async for doc in stale})
        return list(found.values())

    async def take_digest(
        self, state: ChatState, *, now: datetime, window: timedelta, lease: timedelta
    ) -> ChatState | None:
        """Move the folded messages into a digest being sent (and open the next window);
        or take over a digest whose sender's lease ran out. None if another got there first."""
        key = _key(state.user_id, state.conversation_id)
        flush_id = state.flush_id or f"digest:{key}:{state.version + 1}"
        fields: Document = {
            "flush_id": flush_id,
            "flush_lease": stored_time(now + lease),
        }
        if state.flush_id is None:
            doc = await self.collection.find_one({"_id": key, "version": state.version})
            if doc is None:
                return None
            fields |= {
                "flushing": doc.get("folded") or {},
                "folded": {},
                "has_folded": False,
                "window_until": stored_time(now + window),
                "opened_by": flush_id,
            }
        result = await self.collection.update_one(
            {"_id": key, "version": state.version}, {"$set": fields, "$inc": {"version": 1}}
        )
        if result.matched_count == 0:
            return None
        return await self.get(state.user_id, state.conversation_id)

    async def digest_sent(self, state: ChatState) -> None:
        await self.collection.update_one(
            {"_id": _key(state.user_id, state.conversation_id), "flush_id": state.flush_id},
            {"$unset": {"flushing": "", "flush_id": "", "flush_lease": ""}},
        )

    async def erase_user(self, user_id: str) -> None:
        await self.collection.delete_many({"user_id": user_id})

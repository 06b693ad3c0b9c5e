"""``notification_inbox``: each user's in-app notifications, kept 90 days (TTL on ``expires``).

One item per (event, user) — a unique index — so a redelivered event adds nothing.
Ids are time-ordered (``ntf_<ns hex><random>``), so ``_id`` drives newest-first pages.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.envelope import utcnow
from switchyard.mongo import loaded_time, stored_time, ttl_index
from switchyard.mongo.client import Document, Index, asc

COLLECTION = "notification_inbox"
KEEP = timedelta(days=90)
_ID_PATTERN = re.compile(r"^ntf_[0-9a-f]{28}$")


def inbox_indexes() -> list[Index]:
    return [
        Index(COLLECTION, asc("event_id", "user_id"), unique=True),
        Index(COLLECTION, asc("user_id")),
        ttl_index(COLLECTION, "expires"),
    ]


def is_item_id(value: str) -> bool:
    return _ID_PATTERN.match(value) is not None


@dataclass(frozen=True)
class InboxItem:
    id: str
    user_id: str
    event_id: str
    category: str
    title: str
    body: str
    data: Mapping[str, str]
    created_at: datetime
    read_at: datetime | None


def _item(doc: Mapping[str, Any]) -> InboxItem:
    return InboxItem(
        id=doc["_id"],
        user_id=doc["user_id"],
        event_id=doc["event_id"],
        category=doc["category"],
        title=doc["title"],
        body=doc["body"],
        data=dict(doc.get("data") or {}),
        created_at=loaded_time(doc["created"]),
        read_at=loaded_time(doc["read"]) if doc.get("read") else None,
    )


class InboxStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._last = 0

    def _next_id(self) -> str:
        self._last = max(time.time_ns(), self._last + 1)
        return f"ntf_{self._last:016x}{secrets.token_hex(6)}"

    async def add(
        self,
        *,
        user_id: str,
        event_id: str,
        category: str,
        title: str,
        body: str,
        data: Mapping[str, str],
    ) -> tuple[InboxItem, bool]:
        """The item for (event, user): created now (True) or the one already there (False)."""
        now = utcnow()
        doc: Document = {
            "_id": self._next_id(),
            "user_id": user_id,
            "event_id": event_id,
            "category": category,
            "title": title,
            "body": body,
            "data": dict(data),
            "created": stored_time(now),
            "expires": stored_time(now + KEEP),
        }
        try:
            await self.collection.insert_one(doc)
            return _item(doc), True
        except DuplicateKeyError:
            existing = await self.collection.find_one({"event_id": event_id, "user_id": user_id})
        if existing is None:
            raise LookupError(f"inbox item of event {event_id} vanished")
        return _item(existing), False

    async def page(
        self, user_id: str, *, limit: int, after: str | None, unread: bool | None
    ) -> tuple[list[InboxItem], str | None]:
        """Newest first; ``after`` is the last id of the previous page."""
        query: Document = {"user_id": user_id}
        if unread is True:
            query["read"] = {"$exists": False}
        elif unread is False:
            query["read"] = {"$exists": True}
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.collection.find(query).sort("_id", DESCENDING).limit(limit + 1)
        docs = [doc async for doc in cursor]
        items = [_item(doc) for doc in docs[:limit]]
        return items, items[-1].id if len(docs) > limit else None

    async def unread_count(self, user_id: str) -> int:
        return await self.collection.count_documents(
            {"user_id": user_id, "read": {"$exists": False}}
        )

    async def get(self, user_id: str, item_id: str) -> InboxItem | None:
        doc = await self.collection.find_one({"_id": item_id, "user_id": user_id})
        return _item(doc) if doc else None

    async def mark_read(self, user_id: str, item_id: str) -> InboxItem | None:
        """Read ``item_id`` (once: a second read keeps the first time); None if not theirs."""
        await self.collection.update_one(
            {"_id": item_id, "user_id": user_id, "read": {"$exists": False}},
            {"$set": {"read": stored_time(utcnow())}},
        )
        return await self.get(user_id, item_id)

    async def mark_all_read(self, user_id: str) -> int:
        result = await self.collection.update_many(
            {"user_id": user_id, "read": {"$exists": False}},
            {"$set": {"read": stored_time(utcnow())}},
        )
        return result.modified_count

    async def erase_user(self, user_id: str) -> None:
        await self.collection.delete_many({"user_id": user_id})

"""``notification_users``: who our recipients are, kept from auth's events.

Events can arrive out of order and more than once, so every write is guarded
by the time of the event that produced it (profile and status separately), and
a deleted user stays a tombstone — just the id — that no later event revives.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from notification_svc.domain.users import UserContact, UserStatus
from switchyard.envelope import utcnow
from switchyard.mongo import stored_time, time_range
from switchyard.mongo.client import Document

COLLECTION = "notification_users"


def _newer_than(field: str, moment: datetime) -> Document:
    return {"$or": [{field: {"$exists": False}}, time_range(field, before=moment)]}


class UserDirectory:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def get(self, user_id: str) -> UserContact | None:
        doc = await self.collection.find_one({"_id": user_id})
        return _contact(doc) if doc else None

    async def record_profile(
        self, user_id: str, *, email: str, display_name: str, as_of: datetime
    ) -> bool:
        """Record where to reach the user, unless a newer profile or a deletion is known."""
        return await self._guarded_upsert(
            user_id,
            _newer_than("profile_as_of", as_of),
            {"email": email, "display_name": display_name, "profile_as_of": stored_time(as_of)},
            default_status="pending_verification",
        )

    async def record_status(self, user_id: str, status: UserStatus, *, as_of: datetime) -> bool:
        return await self._guarded_upsert(
            user_id,
            _newer_than("status_as_of", as_of),
            {"status": status, "status_as_of": stored_time(as_of)},
        )

    async def erase(self, user_id: str, *, deleted_at: datetime) -> None:
        """Keep only a tombstone: the id, so late events for this user are recognised."""
        await self.collection.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "status": "deleted",
                    "erased": stored_time(deleted_at),
                    "updated": stored_time(utcnow()),
                },
                "$unset": {
                    "email": "",
                    "display_name": "",
                    "profile_as_of": "",
                    "status_as_of": "",
                },
            },
            upsert=True,
        )

    async def _guarded_upsert(
        self,
        user_id: str,
        guard: Document,
        fields: Document,
        *,
        default_status: UserStatus | None = None,
    ) -> bool:
        # $and around the guard's $or: bare, the embedded store updated other users.
        query: Document = {"$and": [{"_id": user_id}, {"erased": {"$exists": False}}, guard]}
        update: Document = {"$set": {**fields, "updated": stored_time(utcnow())}}
        if default_status is not None:
            update["$setOnInsert"] = {"status": default_status}
        try:
            result = await self.collection.update_one(query, update, upsert=True)
        except DuplicateKeyError:
            return False  # the document exists and the guard said no: stale event or tombstone
        return result.modified_count == 1 or result.upserted_id is not None


def _contact(doc: Mapping[str, Any]) -> UserContact:
    return UserContact(
        user_id=doc["_id"],
        status=doc.get("status", "pending_verification"),
        email=doc.get("email"),
        display_name=doc.get("display_name"),
    )

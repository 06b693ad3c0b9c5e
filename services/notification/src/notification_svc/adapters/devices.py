"""``notification_devices``: a user's push tokens (one document per token), with last seen."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from notification_svc.domain.push import MAX_DEVICES, Device, Platform
from switchyard.envelope import utcnow
from switchyard.mongo import loaded_time, stored_time, time_sort_key
from switchyard.mongo.client import Document, Index, asc

COLLECTION = "notification_devices"


def device_indexes() -> list[Index]:
    return [Index(COLLECTION, asc("user_id"))]


def _device(doc: Mapping[str, Any]) -> Device:
    return Device(
        token=doc["_id"],
        user_id=doc["user_id"],
        platform=doc["platform"],
        created_at=loaded_time(doc["created"]),
        last_seen=loaded_time(doc["last_seen"]),
    )


class DeviceStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def register(self, user_id: str, token: str, platform: Platform) -> Device:
        """Register (or refresh) ``token`` for ``user_id``; a token moves to its latest user.
        Beyond :data:`MAX_DEVICES` the least recently seen of the user's tokens are dropped."""
        now = stored_time(utcnow())
        await self.collection.update_one(
            {"_id": token},
            {
                "$set": {"user_id": user_id, "platform": platform, "last_seen": now},
                "$setOnInsert": {"created": now},
            },
            upsert=True,
        )
        devices = await self.of_user(user_id)
        for extra in devices[MAX_DEVICES:]:
            await self.collection.delete_one({"_id": extra.token, "user_id": user_id})
        return next(d for d in devices if d.token == token)

    async def of_user(self, user_id: str) -> list[Device]:
        """Most recently seen first."""
        cursor = self.collection.find({"user_id": user_id}).sort(time_sort_key("last_seen"), -1)
        return [_device(doc) async for doc in cursor]

    async def of_users(self, user_ids: Iterable[str]) -> dict[str, list[Device]]:
        ids = list(dict.fromkeys(user_ids))
        found: dict[str, list[Device]] = {uid: [] for uid in ids}
        if not ids:
            return found
        async for doc in self.collection.find({"user_id": {"$in": ids}}):
            found[doc["user_id"]].append(_device(doc))
        return found

    async def remove(self, token: str, *, user_id: str | None = None) -> bool:
        query: Document = {"_id": token}
        if user_id is not None:
            query["user_id"] = user_id
        result = await self.collection.delete_one(query)
        return result.deleted_count == 1

    async def erase_user(self, user_id: str) -> None:
        await self.collection.delete_many({"user_id": user_id})

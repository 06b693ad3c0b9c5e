"""Per-user storage use (collection ``file_usage``), for the quota.

One document per owner: ``bytes`` and a map ``files.<file id>: size`` of what is counted.
A reservation is one guarded update — ``$inc`` only when the total stays within the quota
and the file is not counted yet — so concurrent uploads can never overshoot it, and
repeating a reservation or a release (a retried sweep, a crash in between) changes
nothing. No multi-document transaction is involved (DESIGN §2).
"""

from __future__ import annotations

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.mongo.client import Document

COLLECTION = "file_usage"


class UsageLedger:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def used(self, owner_id: str) -> int:
        doc = await self.collection.find_one({"_id": owner_id}, {"bytes": 1})
        return int(doc["bytes"]) if doc else 0

    async def reserve(self, owner_id: str, file_id: str, size: int, *, quota: int) -> bool:
        """Count ``size`` bytes of ``file_id`` against ``owner_id``; False when over quota."""
        counted = f"files.{file_id}"
        try:
            await self.collection.update_one(
                {"_id": owner_id}, {"$setOnInsert": {"bytes": 0, "files": {}}}, upsert=True
            )
        except DuplicateKeyError:
            pass  # created concurrently: exactly what was wanted
        result = await self.collection.update_one(
            {"_id": owner_id, "bytes": {"$lte": quota - size}, counted: {"$exists": False}},
            {"$inc": {"bytes": size}, "$set": {counted: size}},
        )
        if result.modified_count == 1:
            return True
        return await self.collection.find_one({"_id": owner_id, counted: size}) is not None

    async def release(self, owner_id: str, file_id: str) -> None:
        counted = f"files.{file_id}"
        # The whole map is read: the embedded store answers a projection of a dotted path
        # with a flat "files.<id>" key instead of the nested document MongoDB returns.
        doc = await self.collection.find_one({"_id": owner_id}, {"files": 1})
        size = (doc or {}).get("files", {}).get(file_id)
        if size is None:
            return  # never counted, or already released
        await self.collection.update_one(
            {"_id": owner_id, counted: size},
            {"$inc": {"bytes": -int(size)}, "$unset": {counted: ""}},
        )

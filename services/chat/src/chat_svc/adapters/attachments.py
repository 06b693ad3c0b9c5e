"""Which files a user may attach: a read model fed by ``file.uploaded`` / ``file.deleted``.

One document per file id; a deletion leaves a tombstone so a late or repeated
``file.uploaded`` cannot revive the file.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.collection import AsyncCollection

from switchyard.envelope import utcnow
from switchyard.mongo import stored_time
from switchyard.mongo.client import Document

ATTACHMENTS = "attachments"


class Attachments:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def uploaded(self, file_id: str, owner_id: str, content_type: str, size: int) -> None:
        await self.collection.update_one(
            {"_id": file_id},
            {
                "$setOnInsert": {
                    "owner_id": owner_id,
                    "content_type": content_type,
                    "size": size,
                    "deleted": False,
                    "recorded": stored_time(utcnow()),
                }
            },
            upsert=True,
        )

    async def deleted(self, file_id: str, owner_id: str) -> None:
        await self.collection.update_one(
            {"_id": file_id},
            {"$set": {"deleted": True, "owner_id": owner_id}},
            upsert=True,
        )

    async def unusable(self, owner_id: str, file_ids: Sequence[str]) -> list[str]:
        """The ids among ``file_ids`` that ``owner_id`` may not attach (unknown, foreign, deleted)."""
        wanted = list(dict.fromkeys(file_ids))
        if not wanted:
            return []
        usable = {
            doc["_id"]
            async for doc in self.collection.find(
                {"_id": {"$in": wanted}, "owner_id": owner_id, "deleted": False}, {"_id": 1}
            )
        }
        return [file_id for file_id in wanted if file_id not in usable]

"""Who besides the owner may read a file: the recipients of a chat message it was attached
to (collection ``file_grants``), kept from ``chat.message.sent`` events.

A grant is one document per (message, file, recipient): a message's grants go away with
``chat.message.deleted``, a file's with the file, a user's with the account.

A deleted message leaves a tombstone (collection ``file_revoked_messages``), because
events can arrive out of order — a ``chat.message.sent`` retried through the bus's delay
tiers, or redelivered, may be handled after the ``chat.message.deleted`` that undoes it.
Both sides use single-document writes only (the store's transactions are not isolated):
revoking writes the tombstone, then deletes the grants; granting writes the grants, then
looks for the tombstone and deletes them again if it is there. Whichever runs second
sees the other's first write, so no grant of a deleted message survives. Tombstones
expire after ``REVOKED_KEEP`` (far longer than any retry or redelivery takes).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from switchyard.mongo.client import Document, Index, asc
from switchyard.mongo.dates import stored_time, ttl_index

COLLECTION = "file_grants"
REVOKED_COLLECTION = "file_revoked_messages"
REVOKED_KEEP = timedelta(days=30)


def grant_indexes() -> list[Index]:
    return [
        Index(COLLECTION, asc("file_id", "user_id")),
        Index(COLLECTION, asc("message_id")),
        Index(COLLECTION, asc("user_id")),
        ttl_index(REVOKED_COLLECTION, "revoked", expire_after=REVOKED_KEEP),
    ]


class Grants:
    def __init__(
        self, collection: AsyncCollection[Document], revoked: AsyncCollection[Document]
    ) -> None:
        self.collection = collection
        self.revoked = revoked

    async def grant(
        self, *, message_id: str, file_id: str, user_ids: Iterable[str], now: datetime
    ) -> None:
        operations = [
            UpdateOne(
                {"_id": f"{message_id}:{file_id}:{user_id}"},
                {
                    "$setOnInsert": {
                        "message_id": message_id,
                        "file_id": file_id,
                        "user_id": user_id,
                        "granted": stored_time(now),
                    }
                },
                upsert=True,
            )
            for user_id in dict.fromkeys(user_ids)
        ]
        if not operations:
            return
        await self.collection.bulk_write(operations, ordered=False)
        if await self.revoked.find_one({"_id": message_id}, {"_id": 1}) is not None:
            # The message was deleted before (or while) this grant was written.
            await self.collection.delete_many({"message_id": message_id})

    async def may_read(self, file_id: str, user_id: str) -> bool:
        found = await self.collection.find_one({"file_id": file_id, "user_id": user_id}, {"_id": 1})
        return found is not None

    async def revoke_message(self, message_id: str, *, now: datetime) -> None:
        """Tombstone first, then the grants: a late grant of this message finds it."""
        await self.revoked.update_one(
            {"_id": message_id},
            {"$setOnInsert": {"revoked": stored_time(now)}},
            upsert=True,
        )
        await self.collection.delete_many({"message_id": message_id})

    async def forget_file(self, file_id: str) -> None:
        await self.collection.delete_many({"file_id": file_id})

    async def forget_user(self, user_id: str) -> None:
        await self.collection.delete_many({"user_id": user_id})

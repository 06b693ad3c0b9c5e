"""Who besides the owner may read a file: the recipients of a chat message it was attached
to (collection ``file_grants``), kept from ``chat.message.sent`` events.

A grant is one document per (message, file, recipient): a message's grants go away with
``chat.message.deleted``, a file's with the file, a user's with the account.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from switchyard.mongo.client import Document, Index, asc
from switchyard.mongo.dates import stored_time

COLLECTION = "file_grants"


def grant_indexes() -> list[Index]:
    return [
        Index(COLLECTION, asc("file_id", "user_id")),
        Index(COLLECTION, asc("message_id")),
        Index(COLLECTION, asc("user_id")),
    ]


class Grants:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

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
        if operations:
            await self.collection.bulk_write(operations, ordered=False)

    async def may_read(self, file_id: str, user_id: str) -> bool:
        found = await self.collection.find_one({"file_id": file_id, "user_id": user_id}, {"_id": 1})
        return found is not None

    async def revoke_message(self, message_id: str) -> None:
        await self.collection.delete_many({"message_id": message_id})

    async def forget_file(self, file_id: str) -> None:
        await self.collection.delete_many({"file_id": file_id})

    async def forget_user(self, user_id: str) -> None:
        await self.collection.delete_many({"user_id": user_id})

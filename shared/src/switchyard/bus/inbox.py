"""The consumer-side inbox: a handler's effect happens once per (queue, source, id).

A delivery first claims its key with an insert (unique ``_id``). A finished key
marks later copies as duplicates; a key still being processed belongs to
whoever holds its lease, unless the broker says this is a redelivery (the
previous holder's channel died) or the lease ran out.
"""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.envelope import Envelope
from switchyard.mongo.client import Document, Index, asc

INBOX_COLLECTION = "inbox"
KEEP_DONE_FOR = timedelta(days=7)


class Claim(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    BUSY = "busy"


def inbox_indexes(collection: str = INBOX_COLLECTION) -> list[Index]:
    return [
        Index(collection, asc("done.at"), expire_after_seconds=int(KEEP_DONE_FOR.total_seconds())),
    ]


class Inbox:
    def __init__(
        self, collection: AsyncCollection[Document], *, owner: str, lease_seconds: float = 120.0
    ) -> None:
        self.collection = collection
        self.owner = owner
        self.lease_seconds = lease_seconds

    @staticmethod
    def key(queue: str, envelope: Envelope) -> str:
        return f"{queue}|{envelope.source}|{envelope.id}"

    async def claim(self, key: str, *, redelivered: bool) -> Claim:
        now = time.time()
        try:
            await self.collection.insert_one(
                {
                    "_id": key,
                    "status": "processing",
                    "owner": self.owner,
                    "lease_until": now + self.lease_seconds,
                }
            )
            return Claim.NEW
        except DuplicateKeyError:
            existing = await self.collection.find_one({"_id": key})
        if existing is None:  # released between our insert and our read
            return await self.claim(key, redelivered=redelivered)
        if existing.get("status") == "done":
            return Claim.DUPLICATE
        if not redelivered and float(existing.get("lease_until", 0)) > now:
            return Claim.BUSY
        taken = await self.collection.find_one_and_update(
            {
                "_id": key,
                "status": "processing",
                "owner": existing.get("owner"),
                "lease_until": existing.get("lease_until"),
            },
            {"$set": {"owner": self.owner, "lease_until": now + self.lease_seconds}},
        )
        return Claim.NEW if taken is not None else Claim.BUSY

    async def complete(self, key: str) -> None:
        await self.collection.update_one(
            {"_id": key},
            # The date goes in a sub-document: a bare datetime $set in an update is stored
            # as a string by the embedded server (see the store contract tests).
            {
                "$set": {"status": "done", "done": {"at": datetime.now(UTC)}},
                "$unset": {"lease_until": ""},
            },
        )

    async def release(self, key: str) -> None:
        await self.collection.delete_one({"_id": key, "owner": self.owner, "status": "processing"})

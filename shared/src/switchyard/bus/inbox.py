"""The consumer-side inbox: a handler's effect happens once per (queue, source, id).

A delivery first claims its key with an insert (unique ``_id``); the claim names
this one delivery (a token) and a lease. A finished key marks later copies as
duplicates. A key still being processed belongs to its holder while the lease is
live — the consumer renews it while the handler runs, so a slow handler keeps it —
and is taken over only once the lease has run out (the holder died). A copy that
finds a live lease waits for it (see the consumer), redelivered or not: a
redelivery means the broker lost the holder's channel, not that the holder stopped.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.envelope import Envelope, utcnow
from switchyard.mongo.client import Document, Index
from switchyard.mongo.dates import loaded_time, stored_time, time_range, ttl_index

INBOX_COLLECTION = "inbox"
KEEP_DONE_FOR = timedelta(days=7)


class Claim(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    BUSY = "busy"


@dataclass(frozen=True)
class InboxClaim:
    outcome: Claim
    token: str = ""  # this delivery's claim, when the outcome is NEW


def inbox_indexes(collection: str = INBOX_COLLECTION) -> list[Index]:
    return [ttl_index(collection, "done", expire_after=KEEP_DONE_FOR)]


class Inbox:
    def __init__(
        self, collection: AsyncCollection[Document], *, owner: str, lease_seconds: float = 30.0
    ) -> None:
        self.collection = collection
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.lease = timedelta(seconds=lease_seconds)

    @staticmethod
    def key(queue: str, envelope: Envelope) -> str:
        return f"{queue}|{envelope.source}|{envelope.id}"

    async def claim(self, key: str) -> InboxClaim:
        token = f"{self.owner}:{uuid.uuid4().hex[:12]}"
        now = utcnow()
        try:
            await self.collection.insert_one(
                {
                    "_id": key,
                    "status": "processing",
                    "owner": token,
                    "lease_expires": stored_time(now + self.lease),
                }
            )
            return InboxClaim(Claim.NEW, token)
        except DuplicateKeyError:
            existing = await self.collection.find_one({"_id": key})
        if existing is None:  # released between our insert and our read
            return await self.claim(key)
        if existing.get("status") == "done":
            return InboxClaim(Claim.DUPLICATE)
        if loaded_time(existing["lease_expires"]) > now:
            return InboxClaim(Claim.BUSY)
        taken = await self.collection.find_one_and_update(
            {  # the lapsed claim we read, still lapsed: one of the racing copies takes it
                "_id": key,
                "status": "processing",
                "owner": existing.get("owner"),
                **time_range("lease_expires", at_or_before=now),
            },
            {"$set": {"owner": token, "lease_expires": stored_time(now + self.lease)}},
        )
        return InboxClaim(Claim.NEW, token) if taken is not None else InboxClaim(Claim.BUSY)

    async def claim_or_wait(self, key: str, *, wait: float) -> InboxClaim:
        """Claim ``key``; while another delivery holds a live lease on it, wait up to ``wait``
        seconds for that one to finish (→ DUPLICATE), fail (→ NEW) or die (its lease runs
        out → NEW). Still BUSY after ``wait``: the caller puts the copy on a retry tier."""
        deadline = time.monotonic() + wait
        longest = min(1.0, self.lease_seconds / 4)
        pause = 0.02  # most holders finish within milliseconds: look again soon, then less often
        while True:
            claim = await self.claim(key)
            left = deadline - time.monotonic()
            if claim.outcome is not Claim.BUSY or left <= 0:
                return claim
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, longest)

    async def renew(self, key: str, token: str) -> bool:
        """Extend the lease while the handler runs; False when another delivery took it."""
        result = await self.collection.update_one(
            {"_id": key, "status": "processing", "owner": token},
            {"$set": {"lease_expires": stored_time(utcnow() + self.lease)}},
        )
        return result.matched_count == 1

    async def complete(self, key: str) -> None:
        """The effect happened: whoever holds the claim now, later copies are duplicates."""
        await self.collection.update_one(
            {"_id": key},
            {
                "$set": {"status": "done", "done": stored_time(utcnow())},
                "$unset": {"lease_expires": ""},
            },
        )

    async def release(self, key: str, token: str) -> None:
        await self.collection.delete_one({"_id": key, "owner": token, "status": "processing"})

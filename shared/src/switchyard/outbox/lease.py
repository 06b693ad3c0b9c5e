"""The relay lease: one relay per service publishes at a time, fenced by a counter.

The lease document ``{_id: service, owner, until, fence}`` names the holder until a
time (``until``, a stored time). Taking over an expired lease (or creating it) increments ``fence``; the holder
renews only while ``owner`` and ``fence`` are still its own, so a holder whose lease
ran out and was taken over — even by itself in a later tenure — learns it at its next
renewal and stops publishing what it read under the old tenure.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.envelope import utcnow
from switchyard.mongo.dates import stored_time, time_range

LEASES_COLLECTION = "outbox_leases"


class LeaseLost(Exception):
    """The relay's tenure ended: what it read is no longer its to publish."""


class RelayLease:
    def __init__(
        self, collection: AsyncCollection[dict[str, Any]], name: str, owner: str, seconds: float
    ) -> None:
        self.collection = collection
        self.name = name
        self.owner = owner
        self.seconds = seconds
        self.fence = 0  # the counter of our current tenure; 0 while we hold none
        self.until = 0.0  # when our tenure runs out (epoch seconds)

    def holds(self, fence: int) -> bool:
        """True while the tenure ``fence`` is ours and has not run out."""
        return fence != 0 and self.fence == fence and time.time() < self.until

    async def acquire(self) -> bool:
        """Hold the lease (renewing ours, or taking over an expired one); False if another
        replica holds it."""
        now = utcnow()
        if self.fence and self.until - now.timestamp() > self.seconds / 2:
            return True
        if self.fence and await self.renew():
            return True
        until = now + timedelta(seconds=self.seconds)
        taken = await self.collection.find_one_and_update(
            {"_id": self.name, **time_range("until", before=now)},
            {"$set": {"owner": self.owner, "until": stored_time(until)}, "$inc": {"fence": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if taken is not None:
            self.fence, self.until = int(taken["fence"]), until.timestamp()
            return True
        try:
            await self.collection.insert_one(
                {"_id": self.name, "owner": self.owner, "until": stored_time(until), "fence": 1}
            )
        except DuplicateKeyError:
            self.fence, self.until = 0, 0.0
            return False
        self.fence, self.until = 1, until.timestamp()
        return True

    async def renew(self) -> bool:
        """Extend our tenure; False (and no tenure any more) when it was taken over."""
        if not self.fence:
            return False
        until = utcnow() + timedelta(seconds=self.seconds)
        result = await self.collection.update_one(
            {"_id": self.name, "owner": self.owner, "fence": self.fence},
            {"$set": {"until": stored_time(until)}},
        )
        if result.matched_count == 1:
            self.until = until.timestamp()
            return True
        self.fence, self.until = 0, 0.0
        return False

    async def release(self) -> None:
        if self.fence:
            await self.collection.delete_one(
                {"_id": self.name, "owner": self.owner, "fence": self.fence}
            )
        self.fence, self.until = 0, 0.0

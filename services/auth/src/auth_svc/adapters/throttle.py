"""Failed-login counting per account key (a hash of the email, known account or not)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from switchyard.mongo import Index
from switchyard.mongo.client import asc

THROTTLE = "login_throttle"
INDEXES = [Index(THROTTLE, asc("expiry.at"), expire_after_seconds=0)]
# Times live in sub-documents ({"window": {"start": t}}, {"lock": {"until": t}}): the
# embedded store keeps a bare datetime given to $set as text (see shared/tests/store).


def throttle_key(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


class LoginThrottle:
    """``threshold`` failures within ``window`` seconds lock the key for ``duration`` seconds."""

    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], *, threshold: int, window: int, duration: int
    ) -> None:
        self.collection = db[THROTTLE]
        self.threshold = threshold
        self.window = timedelta(seconds=window)
        self.duration = timedelta(seconds=duration)

    async def locked_for(self, email: str, now: datetime) -> float:
        """Seconds until the key unlocks (0 when it is not locked)."""
        document = await self.collection.find_one({"_id": throttle_key(email)})
        locked_until = (document.get("lock") or {}).get("until") if document else None
        if locked_until is None or locked_until <= now:
            return 0.0
        remaining: float = (locked_until - now).total_seconds()
        return remaining

    async def record_failure(self, email: str, now: datetime) -> float:
        """Count a failure; returns the lock duration in seconds when this failure locks the key."""
        key = throttle_key(email)
        window_open = now - self.window
        document = await self._count(key, window_open, now)
        if document is None:
            try:
                # A new window: the guard keeps two racing "first failures" from both resetting it.
                await self.collection.update_one(
                    {"_id": key, "window.start": {"$lte": window_open}},
                    {
                        "$set": {
                            "window": {"start": now},
                            "failures": 1,
                            "expiry": {"at": now + self.window},
                        }
                    },
                    upsert=True,
                )
                failures = 1
            except DuplicateKeyError:
                document = await self._count(key, window_open, now)
                failures = document["failures"] if document else 1
        else:
            failures = document["failures"]
        if failures < self.threshold:
            return 0.0
        locked_until = now + self.duration
        result = await self.collection.update_one(
            {"_id": key, "failures": {"$gte": self.threshold}},
            {
                "$set": {
                    "lock": {"until": locked_until},
                    "failures": 0,
                    "window": {"start": now},
                    "expiry": {"at": locked_until + self.window},
                }
            },
        )
        return self.duration.total_seconds() if result.modified_count == 1 else 0.0

    async def _count(self, key: str, window_open: datetime, now: datetime) -> dict[str, Any] | None:
        return await self.collection.find_one_and_update(
            {"_id": key, "window.start": {"$gt": window_open}},
            {"$inc": {"failures": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def reset(self, email: str) -> None:
        await self.collection.delete_one({"_id": throttle_key(email)})

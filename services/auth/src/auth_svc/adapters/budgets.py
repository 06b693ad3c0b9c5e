"""Attempt budgets: at most ``limit`` attempts per key in a fixed window, reserved *before*
the attempt is made.

One document per key: ``{used, window: {until}, last: {at}}``. :meth:`AttemptBudget.reserve`
is a guarded increment (``used < limit`` in a live window), so however many requests arrive
at once, no more than ``limit`` are let through to the costly or risky part (argon2, a code
comparison, an email); the others are refused before they start. An attempt that turns out
harmless gives its slot back (:meth:`refund`) or clears the key (:meth:`clear`).

Used for password attempts per address (the lockout), wrong code guesses per account and
purpose, and codes issued per account and purpose (with a minimum interval: the cooldown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from switchyard.envelope import Envelope
from switchyard.mongo import Index
from switchyard.outbox import Expiry, delete_documents, stage_events

BUDGETS = "attempt_budgets"
# Removed a day past the window by the outbox relay's sweep, and only once the events a
# document holds are published (a TTL index would delete them with it); reads check the
# window themselves.
EXPIRY = Expiry(BUDGETS, "window.until", after_seconds=86400)
INDEXES: list[Index] = []
# Times live in sub-documents: the embedded store keeps a bare datetime given to $set as text.


def to_millisecond(moment: datetime) -> datetime:
    """What the store keeps of a datetime (BSON dates are milliseconds): the window end is
    compared for equality later, so it is cut the same way before it is written."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Reservation:
    granted: bool
    used: int  # attempts counted in the window, this one included when granted
    until: datetime  # the end of the window (when a refused caller may try again)
    last: bool = False  # this reservation took the last slot of the window

    def retry_after(self, now: datetime) -> float:
        return max(1.0, (self.until - now).total_seconds())


class AttemptBudget:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        prefix: str,
        limit: int,
        window: float,
        min_interval: float = 0,
    ) -> None:
        self.collection = db[BUDGETS]
        self.prefix = prefix
        self.limit = limit
        self.window = timedelta(seconds=window)
        self.min_interval = timedelta(seconds=min_interval)

    def _id(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def reserve(self, key: str, now: datetime, *, spaced: bool = True) -> Reservation:
        """Count one attempt if the window has room (and, when ``spaced``, ``min_interval``
        has passed since the last one)."""
        spacing = self.min_interval if spaced else timedelta(0)
        taken = await self._take(key, now, spacing)
        if taken is not None:
            return taken
        try:
            # No live window: open one. The guard keeps two racing openers from both
            # succeeding; the loser's upsert collides with the live document.
            until = to_millisecond(now + self.window)
            guard: dict[str, Any] = {"_id": self._id(key), "window.until": {"$lte": now}}
            if spacing:
                guard["last.at"] = {"$lte": now - spacing}
            await self.collection.update_one(
                guard,
                {"$set": {"used": 1, "window": {"until": until}, "last": {"at": now}}},
                upsert=True,
            )
            return Reservation(True, 1, until, last=self.limit == 1)
        except DuplicateKeyError:
            taken = await self._take(key, now, spacing)  # a racer opened the window just now
            if taken is not None:
                return taken
        document = await self.collection.find_one({"_id": self._id(key)}, {"outbox": 0})
        if document is None:  # expired and removed in between: the next call opens a window
            return Reservation(False, 0, now)
        until = document["window"]["until"]
        used = int(document.get("used", 0))
        if used < self.limit and spacing:
            until = min(until, document["last"]["at"] + spacing)
        return Reservation(False, used, until)

    async def refusing(self, key: str, now: datetime) -> Reservation | None:
        """The refusal a reservation would get now because the window is used up (or None);
        counts nothing."""
        document = await self.collection.find_one(
            {"_id": self._id(key), "window.until": {"$gt": now}, "used": {"$gte": self.limit}},
            {"outbox": 0},
        )
        if document is None:
            return None
        return Reservation(False, int(document["used"]), document["window"]["until"])

    async def _take(self, key: str, now: datetime, spacing: timedelta) -> Reservation | None:
        guard: dict[str, Any] = {
            "_id": self._id(key),
            "window.until": {"$gt": now},
            "used": {"$lt": self.limit},
        }
        if spacing:
            guard["last.at"] = {"$lte": now - spacing}
        document = await self.collection.find_one_and_update(
            guard,
            {"$inc": {"used": 1}, "$set": {"last": {"at": now}}},
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
        if document is None:
            return None
        used = int(document["used"])
        return Reservation(True, used, document["window"]["until"], last=used == self.limit)

    async def refund(self, key: str, reservation: Reservation) -> None:
        """Give back the slot of an attempt that did no harm (a right code)."""
        await self.collection.update_one(
            {"_id": self._id(key), "window.until": reservation.until, "used": {"$gt": 0}},
            {"$inc": {"used": -1}},
        )

    async def exhausted(
        self,
        key: str,
        reservation: Reservation,
        *,
        until: datetime | None = None,
        events: Sequence[Envelope] = (),
    ) -> bool:
        """The attempt that took the last slot failed: stage ``events`` (once per window) and,
        given ``until``, keep the window closed until then (the lockout). True when done."""
        update: dict[str, Any] = {"$set": {"exhausted": {"at": reservation.until}}}
        if until is not None:
            update["$set"]["window"] = {"until": to_millisecond(until)}
        result = await self.collection.update_one(
            {  # $and around the $or: bare, the embedded store matched other keys' documents
                "$and": [
                    {"_id": self._id(key)},
                    {"window.until": reservation.until},
                    {"used": {"$gte": self.limit}},
                    # Not yet in this window ($ne would miss a missing field on the embedded store).
                    {
                        "$or": [
                            {"exhausted": {"$exists": False}},
                            {"exhausted.at": {"$lt": reservation.until}},
                        ]
                    },
                ]
            },
            stage_events(update, events),
        )
        return result.modified_count == 1

    async def clear(self, key: str) -> None:
        """Forget every attempt (a successful sign-in)."""
        await delete_documents(self.collection, {"_id": self._id(key)})

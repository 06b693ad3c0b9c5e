"""Attempt budgets in the store: at most ``limit`` attempts per key in a fixed window,
reserved *before* the attempt is made (see ``domain.attempts``).

One document per key: ``{used, window_ends, last_attempt, exhausted_window}``, the times
stored times (``switchyard.mongo.dates``: compared to the microsecond on every backend).
:meth:`AttemptBudget.reserve` is a guarded increment (``used < limit`` in a live window),
so however many requests arrive at once, no more than ``limit`` are let through to the
costly or risky part (argon2, a code comparison, an email); the others are refused before
they start. An attempt that turns out harmless gives its slot back (:meth:`refund`) or
clears the key (:meth:`clear`); a budget of one serves as a lease, given back with
:meth:`release` (guarded on the holder's own window).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from auth_svc.domain.attempts import Reservation
from switchyard.envelope import Envelope
from switchyard.mongo import Index, loaded_time, stored_time, time_range
from switchyard.mongo.client import Document
from switchyard.outbox import Expiry, delete_documents, stage_events

BUDGETS = "attempt_budgets"
# Removed a day past the window by the outbox relay's sweep, and only once the events a
# document holds are published (a TTL index would delete them with it); reads check the
# window themselves.
EXPIRY = Expiry(BUDGETS, "window_ends", after_seconds=86400)
INDEXES: list[Index] = []
_READ = {"outbox": 0}


def _window(until: datetime) -> Document:
    """The window that ends exactly at ``until`` (a reservation's own window)."""
    return time_range("window_ends", at_or_after=until, at_or_before=until)


class AttemptBudget:
    """One kind of budget (``prefix``) in ``attempt_budgets`` (implements
    ``handlers.ports.AttemptBudget``)."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
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
            until = now + self.window
            guard: Document = {"_id": self._id(key), **time_range("window_ends", at_or_before=now)}
            if spacing:
                guard.update(time_range("last_attempt", at_or_before=now - spacing))
            await self.collection.update_one(
                guard,
                {
                    "$set": {
                        "used": 1,
                        "window_ends": stored_time(until),
                        "last_attempt": stored_time(now),
                    }
                },
                upsert=True,
            )
            return Reservation(True, 1, until, last=self.limit == 1)
        except DuplicateKeyError:
            taken = await self._take(key, now, spacing)  # a racer opened the window just now
            if taken is not None:
                return taken
        document = await self.collection.find_one({"_id": self._id(key)}, _READ)
        if document is None:  # expired and removed in between: the next call opens a window
            return Reservation(False, 0, now)
        until = loaded_time(document["window_ends"])
        used = int(document.get("used", 0))
        if used < self.limit and spacing:
            until = min(until, loaded_time(document["last_attempt"]) + spacing)
        return Reservation(False, used, until)

    async def refusing(self, key: str, now: datetime) -> Reservation | None:
        """The refusal a reservation would get now because the window is used up (or None);
        counts nothing."""
        document = await self.collection.find_one(
            {
                "_id": self._id(key),
                **time_range("window_ends", after=now),
                "used": {"$gte": self.limit},
            },
            _READ,
        )
        if document is None:
            return None
        return Reservation(False, int(document["used"]), loaded_time(document["window_ends"]))

    async def _take(self, key: str, now: datetime, spacing: timedelta) -> Reservation | None:
        guard: Document = {
            "_id": self._id(key),
            **time_range("window_ends", after=now),
            "used": {"$lt": self.limit},
        }
        if spacing:
            guard.update(time_range("last_attempt", at_or_before=now - spacing))
        document = await self.collection.find_one_and_update(
            guard,
            {"$inc": {"used": 1}, "$set": {"last_attempt": stored_time(now)}},
            projection=_READ,
            return_document=ReturnDocument.AFTER,
        )
        if document is None:
            return None
        used = int(document["used"])
        until = loaded_time(document["window_ends"])
        return Reservation(True, used, until, last=used == self.limit)

    async def refund(self, key: str, reservation: Reservation) -> None:
        """Give back the slot of an attempt that did no harm (a right code)."""
        await self.collection.update_one(
            {"_id": self._id(key), **_window(reservation.until), "used": {"$gt": 0}},
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
        fields: Document = {"exhausted_window": stored_time(reservation.until)}
        if until is not None:
            fields["window_ends"] = stored_time(until)
        result = await self.collection.update_one(
            {  # $and around the $or: bare, the embedded store matched other keys' documents
                "$and": [
                    {"_id": self._id(key)},
                    _window(reservation.until),
                    {"used": {"$gte": self.limit}},
                    # Not yet in this window ($ne would miss a missing field on the embedded store).
                    {
                        "$or": [
                            {"exhausted_window": {"$exists": False}},
                            time_range("exhausted_window", before=reservation.until),
                        ]
                    },
                ]
            },
            stage_events({"$set": fields}, events),
        )
        return result.modified_count == 1

    async def clear(self, key: str) -> None:
        """Forget every attempt (a successful sign-in)."""
        await delete_documents(self.collection, {"_id": self._id(key)})

    async def release(self, key: str, reservation: Reservation) -> None:
        """Forget the window ``reservation`` was granted in, and only that one: a budget of
        one used as a lease is released by its holder without touching a successor's (a
        holder stalled past its window finds a new window, opened later, ending later)."""
        await delete_documents(
            self.collection, {"_id": self._id(key), **_window(reservation.until)}
        )

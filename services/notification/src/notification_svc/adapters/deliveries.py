"""``notification_deliveries``: every send recorded, with the claim that makes it happen once."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from notification_svc.domain.deliveries import (
    ERASED_RECIPIENT,
    Delivery,
    DeliveryStatus,
    NewDelivery,
)
from switchyard.envelope import utcnow
from switchyard.mongo import loaded_time, stored_time, time_range
from switchyard.mongo.client import Document, Index, asc

COLLECTION = "notification_deliveries"
_ID_PATTERN = re.compile(r"^dlv_[0-9a-f]{28}$")


def delivery_indexes() -> list[Index]:
    return [
        Index(COLLECTION, asc("event_id", "channel", "recipient"), unique=True),
        # Not (user_id, _id): a compound index naming _id breaks inserts on the embedded store.
        Index(COLLECTION, asc("user_id")),
        Index(COLLECTION, asc("status")),
    ]


class DeliveryIds:
    """Opaque to clients, but ordered by creation time so ``_id`` can drive pagination:
    nanoseconds since the epoch (strictly increasing within a process) and a random tail."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        self._last = max(time.time_ns(), self._last + 1)
        return f"dlv_{self._last:016x}{secrets.token_hex(6)}"


def is_delivery_id(value: str) -> bool:
    """Ids this store issues (a cursor carrying anything else was not ours)."""
    return _ID_PATTERN.match(value) is not None


def _delivery(doc: Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=doc["_id"],
        event_id=doc["event_id"],
        event_type=doc["event_type"],
        channel=doc["channel"],
        recipient=doc["recipient"],
        user_id=doc["user_id"],
        template=doc["template"],
        category=doc["category"],
        status=doc["status"],
        attempts=int(doc.get("attempts", 0)),
        provider_response=doc.get("provider_response"),
        created_at=loaded_time(doc["created"]),
        updated_at=loaded_time(doc["updated"]),
        sent_at=loaded_time(doc["sent"]) if doc.get("sent") else None,
        reason=doc.get("reason"),
    )


class DeliveryStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self.ids = DeliveryIds()

    async def open(
        self, new: NewDelivery, *, status: DeliveryStatus = "pending", reason: str | None = None
    ) -> Delivery:
        """The record of ``new``'s (event, channel, recipient): created now, or the existing one."""
        delivery, _ = await self._insert_or_get(new, {"status": status, "attempts": 0}, reason)
        return delivery

    async def open_claimed(
        self, new: NewDelivery, *, owner: str, lease: timedelta
    ) -> tuple[Delivery, bool]:
        """Create the record already claimed by ``owner`` (one write on the common path).

        Returns ``(record, True)`` when it was created, else ``(existing record, False)``.
        """
        claim = {
            "status": "sending",
            "attempts": 1,
            "owner": owner,
            "lease_expires": stored_time(utcnow() + lease),
        }
        return await self._insert_or_get(new, claim, None)

    async def _insert_or_get(
        self, new: NewDelivery, state: Document, reason: str | None
    ) -> tuple[Delivery, bool]:
        now = stored_time(utcnow())
        doc: Document = {
            "_id": self.ids.next(),
            **asdict(new),
            **state,
            "provider_response": None,
            "created": now,
            "updated": now,
        }
        if reason is not None:
            doc["reason"] = reason
        try:
            await self.collection.insert_one(doc)
            return _delivery(doc), True
        except DuplicateKeyError:
            existing = await self.collection.find_one(
                {"event_id": new.event_id, "channel": new.channel, "recipient": new.recipient}
            )
        if existing is None:  # erased between our insert and our read: nothing left to do
            raise LookupError(f"delivery of event {new.event_id} vanished")
        return _delivery(existing), False

    async def find(self, event_id: str, channel: str, recipient: str) -> Delivery | None:
        doc = await self.collection.find_one(
            {"event_id": event_id, "channel": channel, "recipient": recipient}
        )
        return _delivery(doc) if doc else None

    async def get(self, delivery_id: str) -> Delivery | None:
        doc = await self.collection.find_one({"_id": delivery_id})
        return _delivery(doc) if doc else None

    async def claim(self, delivery_id: str, *, owner: str, lease: timedelta) -> Delivery | None:
        """Take a pending or abandoned to ``sending`` for ``owner``; None if another has it."""
        now = utcnow()
        doc = await self.collection.find_one_and_update(
            {  # $and around the $or: bare, the embedded store claimed other deliveries
                "$and": [
                    {"_id": delivery_id},
                    {
                        "$or": [
                            {"status": "pending"},
                            {"status": "sending", **time_range("lease_expires", before=now)},
                        ]
                    },
                ]
            },
            {
                "$set": {
                    "status": "sending",
                    "owner": owner,
                    "lease_expires": stored_time(now + lease),
                    "updated": stored_time(now),
                },
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return _delivery(doc) if doc else None

    async def renew(self, delivery_id: str, *, owner: str, lease: timedelta) -> bool:
        """Extend ``owner``'s claim while it sends; False once another consumer has it."""
        result = await self.collection.update_one(
            {"_id": delivery_id, "status": "sending", "owner": owner},
            {"$set": {"lease_expires": stored_time(utcnow() + lease)}},
        )
        return result.matched_count == 1

    async def mark_sent(self, delivery_id: str, *, response: str) -> None:
        """The provider accepted the message: final, whoever held the claim by now."""
        now = stored_time(utcnow())
        await self.collection.update_one(
            {"_id": delivery_id, "status": {"$in": ["pending", "sending"]}},
            {
                "$set": {
                    "status": "sent",
                    "provider_response": response,
                    "sent": now,
                    "updated": now,
                },
                "$unset": {"owner": "", "lease_expires": ""},
            },
        )

    async def mark_failed(self, delivery_id: str, *, owner: str, response: str) -> bool:
        """The provider refused for good: final, if ``owner`` still holds the claim."""
        return await self._end_claim(delivery_id, owner, status="failed", response=response)

    async def release(self, delivery_id: str, *, owner: str, response: str) -> None:
        """Give the claim back after a temporary failure; the retried event claims it again."""
        await self._end_claim(delivery_id, owner, status="pending", response=response)

    async def finish(
        self, delivery_id: str, *, owner: str, status: DeliveryStatus, response: str, reason: str
    ) -> bool:
        """End ``owner``'s claim with ``status`` and a reason (e.g. suppressed: no devices)."""
        return await self._end_claim(
            delivery_id, owner, status=status, response=response, reason=reason
        )

    async def _end_claim(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: DeliveryStatus,
        response: str,
        reason: str | None = None,
    ) -> bool:
        fields: Document = {
            "status": status,
            "provider_response": response,
            "updated": stored_time(utcnow()),
        }
        if reason is not None:
            fields["reason"] = reason
        result = await self.collection.update_one(
            {"_id": delivery_id, "status": "sending", "owner": owner},
            {
                "$set": fields,
                "$unset": {"owner": "", "lease_expires": ""},
            },
        )
        return result.modified_count == 1

    async def page(
        self,
        *,
        limit: int,
        after: str | None = None,
        user_id: str | None = None,
        status: DeliveryStatus | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """Newest first; ``after`` is the id of the last record of the previous page."""
        query: Document = {}
        if user_id is not None:
            query["user_id"] = user_id
        if status is not None:
            query["status"] = status
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.collection.find(query).sort("_id", DESCENDING).limit(limit + 1)
        docs = [doc async for doc in cursor]
        items = [_delivery(doc) for doc in docs[:limit]]
        next_after = items[-1].id if len(docs) > limit else None
        return items, next_after

    async def erase_recipient(self, user_id: str, *, erased_at: datetime) -> int:
        """Forget where a deleted user's messages went (the records stay, for the counts)."""
        result = await self.collection.update_many(
            {"user_id": user_id},
            {
                "$set": {
                    "recipient": ERASED_RECIPIENT,
                    "erased": stored_time(erased_at),
                    "updated": stored_time(utcnow()),
                },
                "$unset": {"provider_response": ""},
            },
        )
        return result.modified_count

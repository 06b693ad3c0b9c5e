"""``notification_webhooks`` (subscriptions; an outbox collection: disabling one stages
``notification.webhook.disabled`` in the same write) and ``notification_webhook_deliveries``
(one record per (subscription, event) — a unique index — with the claim that makes it
go out once, and the attempt log shown to the owner)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from notification_svc.adapters.webhook_http import Attempt
from notification_svc.domain.webhooks import Subscription, WebhookDeliveryStatus
from switchyard.envelope import Envelope, utcnow
from switchyard.mongo import loaded_time, stored_time, time_range
from switchyard.mongo.client import Document, Index, asc
from switchyard.outbox import delete_documents, stage_events, with_events

SUBSCRIPTIONS = "notification_webhooks"
DELIVERIES = "notification_webhook_deliveries"
_SUB_ID = re.compile(r"^wh_[0-9a-f]{32}$")
_DELIVERY_ID = re.compile(r"^whd_[0-9a-f]{28}$")


def webhook_indexes() -> list[Index]:
    return [
        Index(SUBSCRIPTIONS, asc("owner_id")),
        Index(SUBSCRIPTIONS, asc("status")),
        Index(DELIVERIES, asc("subscription_id", "event_id"), unique=True),
        Index(DELIVERIES, asc("subscription_id")),
    ]


def is_subscription_id(value: str) -> bool:
    return _SUB_ID.match(value) is not None


def is_webhook_delivery_id(value: str) -> bool:
    return _DELIVERY_ID.match(value) is not None


def _subscription(doc: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=doc["_id"],
        owner_id=doc["owner_id"],
        url=doc["url"],
        event_types=tuple(doc["event_types"]),
        secret=doc["secret"],
        sees_all=bool(doc.get("sees_all")),
        status=doc["status"],
        created_at=loaded_time(doc["created"]),
        failing_since=loaded_time(doc["failing_since"]) if doc.get("failing_since") else None,
        disabled_reason=doc.get("disabled_reason"),
    )


@dataclass(frozen=True)
class WebhookDelivery:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: WebhookDeliveryStatus
    attempts: int
    payload: str
    response_code: int | None
    response_body: str | None
    latency_ms: float | None
    error: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


def _delivery(doc: Mapping[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=doc["_id"],
        subscription_id=doc["subscription_id"],
        event_id=doc["event_id"],
        event_type=doc["event_type"],
        status=doc["status"],
        attempts=int(doc.get("attempts", 0)),
        payload=doc["payload"],
        response_code=doc.get("response_code"),
        response_body=doc.get("response_body"),
        latency_ms=doc.get("latency_ms"),
        error=doc.get("error"),
        reason=doc.get("reason"),
        created_at=loaded_time(doc["created"]),
        updated_at=loaded_time(doc["updated"]),
        delivered_at=loaded_time(doc["delivered"]) if doc.get("delivered") else None,
    )


class WebhookStore:
    def __init__(
        self, subscriptions: AsyncCollection[Document], deliveries: AsyncCollection[Document]
    ) -> None:
        self.subscriptions = subscriptions
        self.deliveries = deliveries
        self._last = 0

    # -- subscriptions -------------------------------------------------------------------------

    async def create(
        self, *, owner_id: str, url: str, event_types: list[str], secret: str, sees_all: bool
    ) -> Subscription:
        doc: Document = {
            "_id": "wh_" + secrets.token_hex(16),
            "owner_id": owner_id,
            "url": url,
            "event_types": event_types,
            "secret": secret,
            "sees_all": sees_all,
            "status": "active",
            "created": stored_time(utcnow()),
        }
        await self.subscriptions.insert_one(with_events(doc, []))
        return _subscription(doc)

    async def get(self, subscription_id: str) -> Subscription | None:
        doc = await self.subscriptions.find_one({"_id": subscription_id})
        return _subscription(doc) if doc else None

    async def of_owner(self, owner_id: str) -> list[Subscription]:
        cursor = self.subscriptions.find({"owner_id": owner_id}).sort("_id", 1)
        return [_subscription(doc) async for doc in cursor]

    async def active(self) -> list[Subscription]:
        return [_subscription(doc) async for doc in self.subscriptions.find({"status": "active"})]

    async def delete(self, subscription_id: str, owner_id: str) -> bool:
        deleted = await delete_documents(
            self.subscriptions, {"_id": subscription_id, "owner_id": owner_id}
        )
        if deleted:
            await self.deliveries.delete_many({"subscription_id": subscription_id})
        return deleted > 0

    async def succeeded(self, subscription_id: str) -> None:
        """A delivery worked: the subscription is no longer failing."""
        await self.subscriptions.update_one(
            {"_id": subscription_id, "failing_since": {"$exists": True}},
            {"$unset": {"failing_since": ""}},
        )

    async def failing_since(self, subscription_id: str, now: datetime) -> datetime:
        """Record a failure; returns when the subscription started failing."""
        await self.subscriptions.update_one(
            {"_id": subscription_id, "failing_since": {"$exists": False}},
            {"$set": {"failing_since": stored_time(now)}},
        )
        doc = await self.subscriptions.find_one({"_id": subscription_id})
        if doc is None or not doc.get("failing_since"):
            return now
        return loaded_time(doc["failing_since"])

    async def disable(self, subscription_id: str, *, reason: str, event: Envelope) -> bool:
        """Disable an active subscription, staging ``event`` in the same write (once)."""
        result = await self.subscriptions.update_one(
            {"_id": subscription_id, "status": "active"},
            stage_events(
                {
                    "$set": {
                        "status": "disabled",
                        "disabled_reason": reason,
                        "disabled": stored_time(utcnow()),
                    }
                },
                [event],
            ),
        )
        return result.modified_count == 1

    async def erase_user(self, user_id: str) -> None:
        for sub in await self.of_owner(user_id):
            await self.delete(sub.id, user_id)

    # -- deliveries ----------------------------------------------------------------------------

    def _next_id(self) -> str:
        self._last = max(time.time_ns(), self._last + 1)
        return f"whd_{self._last:016x}{secrets.token_hex(6)}"

    async def open(
        self,
        subscription: Subscription,
        *,
        event_id: str,
        event_type: str,
        payload: str,
        status: WebhookDeliveryStatus = "pending",
        reason: str | None = None,
        claim_for: tuple[str, timedelta] | None = None,
    ) -> tuple[WebhookDelivery, bool]:
        """The record of (subscription, event): created now (True) — already claimed for
        ``claim_for = (owner, lease)`` when given, one write on the common path — or the one
        there (False)."""
        now = stored_time(utcnow())
        doc: Document = {
            "_id": self._next_id(),
            "subscription_id": subscription.id,
            "owner_id": subscription.owner_id,
            "event_id": event_id,
            "event_type": event_type,
            "status": status,
            "attempts": 0,
            "payload": payload,
            "created": now,
            "updated": now,
        }
        if reason is not None:
            doc["reason"] = reason
        if claim_for is not None:
            owner, lease = claim_for
            doc |= {
                "status": "delivering",
                "attempts": 1,
                "owner": owner,
                "lease_expires": stored_time(utcnow() + lease),
            }
        try:
            await self.deliveries.insert_one(doc)
            return _delivery(doc), True
        except DuplicateKeyError:
            existing = await self.deliveries.find_one(
                {"subscription_id": subscription.id, "event_id": event_id}
            )
        if existing is None:
            raise LookupError(f"webhook delivery of {event_id} vanished")
        return _delivery(existing), False

    async def claim(
        self, delivery_id: str, *, owner: str, lease: timedelta, force: bool = False
    ) -> WebhookDelivery | None:
        """Take a pending (or abandoned; ``force``: any final) delivery for an attempt."""
        now = utcnow()
        states: list[Document] = [
            {"status": "pending"},
            {"status": "delivering", **time_range("lease_expires", before=now)},
        ]
        if force:
            states.append({"status": {"$in": ["delivered", "failed"]}})
        doc = await self.deliveries.find_one_and_update(
            {"$and": [{"_id": delivery_id}, {"$or": states}]},
            {
                "$set": {
                    "status": "delivering",
                    "owner": owner,
                    "lease_expires": stored_time(now + lease),
                    "updated": stored_time(now),
                },
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return _delivery(doc) if doc else None

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        owner: str,
        status: WebhookDeliveryStatus,
        attempt: Attempt,
    ) -> None:
        now = stored_time(utcnow())
        fields: Document = {
            "status": status,
            "response_code": attempt.status_code,
            "response_body": attempt.body,
            "latency_ms": attempt.latency_ms,
            "error": attempt.error,
            "updated": now,
        }
        if status == "delivered":
            fields["delivered"] = now
        await self.deliveries.update_one(
            {"_id": delivery_id, "status": "delivering", "owner": owner},
            {"$set": fields, "$unset": {"owner": "", "lease_expires": ""}},
        )

    async def get_delivery(self, subscription_id: str, delivery_id: str) -> WebhookDelivery | None:
        doc = await self.deliveries.find_one(
            {"_id": delivery_id, "subscription_id": subscription_id}
        )
        return _delivery(doc) if doc else None

    async def page(
        self, subscription_id: str, *, limit: int, after: str | None
    ) -> tuple[list[WebhookDelivery], str | None]:
        query: Document = {"subscription_id": subscription_id}
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.deliveries.find(query).sort("_id", DESCENDING).limit(limit + 1)
        docs = [doc async for doc in cursor]
        items = [_delivery(doc) for doc in docs[:limit]]
        return items, items[-1].id if len(docs) > limit else None

"""``notification_broadcasts``: one document per role broadcast, with its progress; an outbox
collection, so each batch's event is staged in the same write that records the batch before."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from switchyard.envelope import Envelope, new_envelope, utcnow
from switchyard.events.notification import BroadcastBatchQueued
from switchyard.mongo import loaded_time, stored_time
from switchyard.mongo.client import Document
from switchyard.outbox import stage_events, with_events

COLLECTION = "notification_broadcasts"


@dataclass(frozen=True)
class Broadcast:
    id: str
    role: str
    category: str
    title: str
    body: str
    requested_by: str
    status: str  # running | done
    batches_done: int
    recipients: int
    created_at: datetime


def _broadcast(doc: Mapping[str, Any]) -> Broadcast:
    return Broadcast(
        id=doc["_id"],
        role=doc["role"],
        category=doc["category"],
        title=doc["title"],
        body=doc["body"],
        requested_by=doc["requested_by"],
        status=doc["status"],
        batches_done=int(doc.get("batches_done", 0)),
        recipients=int(doc.get("recipients", 0)),
        created_at=loaded_time(doc["created"]),
    )


def batch_event(doc: Mapping[str, Any], *, batch: int, after: str | None) -> Envelope:
    return new_envelope(
        BroadcastBatchQueued(
            broadcast_id=doc["_id"],
            role=doc["role"],
            category=doc["category"],
            title=doc["title"],
            body=doc["body"],
            batch=batch,
            after=after,
            requested_by=doc["requested_by"],
        ),
        service="notification",
        subject=doc["_id"],
    )


class BroadcastStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def create(
        self, *, role: str, category: str, title: str, body: str, requested_by: str
    ) -> Broadcast:
        doc: Document = {
            "_id": "bc_" + secrets.token_hex(16),
            "role": role,
            "category": category,
            "title": title,
            "body": body,
            "requested_by": requested_by,
            "status": "running",
            "next_batch": 0,
            "batches_done": 0,
            "recipients": 0,
            "created": stored_time(utcnow()),
        }
        await self.collection.insert_one(with_events(doc, [batch_event(doc, batch=0, after=None)]))
        return _broadcast(doc)

    async def get(self, broadcast_id: str) -> Broadcast | None:
        doc = await self.collection.find_one({"_id": broadcast_id})
        return _broadcast(doc) if doc else None

    async def batch_done(
        self, data: BroadcastBatchQueued, *, sent_to: int, last: str | None
    ) -> bool:
        """Record batch ``data.batch`` (once: guarded by the batch number) and queue the next
        one after ``last`` — or finish when ``last`` is None. False if already recorded."""
        doc = await self.collection.find_one({"_id": data.broadcast_id})
        if doc is None:
            return False
        update: Document = {
            "$set": {
                "next_batch": data.batch + 1,
                "status": "running" if last is not None else "done",
                "updated": stored_time(utcnow()),
            },
            "$inc": {"batches_done": 1, "recipients": sent_to},
        }
        events = [batch_event(doc, batch=data.batch + 1, after=last)] if last is not None else []
        result = await self.collection.update_one(
            {"_id": data.broadcast_id, "next_batch": data.batch}, stage_events(update, events)
        )
        return result.modified_count == 1

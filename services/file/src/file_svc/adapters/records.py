"""File records in MongoDB (collection ``files``), one document per file.

A record is written before the first byte is stored (``uploading``, with a heartbeat
time the running upload refreshes), so whatever a crash leaves in storage is found from
the records. ``ready`` is set together with the ``file.uploaded`` event, ``deleted``
together with ``file.deleted`` (the embedded outbox: one document write each). After
the sweeper removed the blob a record becomes a ``purged`` tombstone that the outbox
relay's expiry sweep removes later — but only once its events were relayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from file_svc.domain.files import StoredFile
from switchyard.envelope import Envelope
from switchyard.mongo.client import Document, Index, asc
from switchyard.mongo.dates import loaded_time, stored_time, time_range, time_sort_key
from switchyard.outbox import PENDING_FIELD, Expiry, stage_events

COLLECTION = "files"


def tombstone_expiry(tombstone_days: int) -> Expiry:
    """Purged records are forgotten after ``tombstone_days`` - by the outbox relay, once
    their ``file.deleted`` event is out (an outbox collection may not carry a TTL index)."""
    return Expiry(
        COLLECTION, "purged", after_seconds=timedelta(days=tombstone_days).total_seconds()
    )


def record_indexes() -> list[Index]:
    return [
        Index(COLLECTION, [("owner_id", 1), ("status", 1), (time_sort_key("created"), 1)]),
        Index(COLLECTION, [("status", 1), (time_sort_key("touched"), 1)]),
        # "<owner>:<Idempotency-Key>" of the upload that created the file, while it lives.
        Index(COLLECTION, asc("idem"), unique=True, sparse=True),
    ]


def _stored_file(doc: Document) -> StoredFile:
    return StoredFile(
        id=doc["_id"],
        owner_id=doc["owner_id"],
        purpose=doc["purpose"],
        filename=doc["filename"],
        content_type=doc["content_type"],
        size=int(doc["size"]),
        sha256=doc["sha256"],
        created_at=loaded_time(doc["created"]),
        status=doc["status"],
    )


class FileRecords:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def start_upload(
        self,
        file_id: str,
        *,
        owner_id: str,
        filename: str,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> None:
        """Raises ``DuplicateKeyError`` when ``idempotency_key`` is taken."""
        doc: Document = {
            "_id": file_id,
            "owner_id": owner_id,
            "filename": filename,
            "status": "uploading",
            "created": stored_time(now),
            "touched": stored_time(now),
        }
        if idempotency_key is not None:
            doc["idem"] = idempotency_key
        await self.collection.insert_one(doc)

    async def by_idempotency_key(self, key: str) -> tuple[str, StoredFile | None, str | None]:
        """(status, the file when ready, SHA-256 of the bytes received) of the upload that
        used ``key``; ("", None, None) when none did."""
        doc = await self.collection.find_one({"idem": key})
        if doc is None:
            return "", None, None
        if doc["status"] != "ready":
            return str(doc["status"]), None, None
        return "ready", _stored_file(doc), doc.get("received_sha256")

    async def heartbeat(self, file_id: str, now: datetime) -> bool:
        """Say the upload is alive; False when the sweeper already gave up on it."""
        result = await self.collection.update_one(
            {"_id": file_id, "status": "uploading"}, {"$set": {"touched": stored_time(now)}}
        )
        return result.matched_count == 1

    async def finish_upload(
        self, stored: StoredFile, event: Envelope, *, received_sha256: str
    ) -> bool:
        """``uploading`` → ``ready`` with the ``file.uploaded`` event; False when the
        record is no longer an upload in progress (the sweeper took it)."""
        update = stage_events(
            {
                "$set": {
                    "status": "ready",
                    "purpose": stored.purpose,
                    "filename": stored.filename,
                    "content_type": stored.content_type,
                    "size": stored.size,
                    "sha256": stored.sha256,
                    "created": stored_time(stored.created_at),
                    "received_sha256": received_sha256,
                },
                "$unset": {"touched": ""},
            },
            [event],
        )
        result = await self.collection.update_one({"_id": stored.id, "status": "uploading"}, update)
        return result.modified_count == 1

    async def abandon(self, file_id: str) -> None:
        """Forget an upload that failed (its temporary objects were removed)."""
        await self.collection.delete_one({"_id": file_id, "status": "uploading"})

    async def get(self, file_id: str) -> StoredFile | None:
        """The file while it is ``ready``; None for any other state (no existence leak)."""
        doc = await self.collection.find_one({"_id": file_id, "status": "ready"})
        return _stored_file(doc) if doc else None

    async def status(self, file_id: str) -> str | None:
        doc = await self.collection.find_one({"_id": file_id}, {"status": 1})
        return str(doc["status"]) if doc else None

    async def mark_deleted(
        self, file_id: str, event_for: Any, *, owner_id: str | None, now: datetime
    ) -> StoredFile | None:
        """``ready`` → ``deleted`` with the event ``event_for(stored)`` builds; None when the
        file is not ready (already deleted, or not this owner's)."""
        query: Document = {"_id": file_id, "status": "ready"}
        if owner_id is not None:
            query["owner_id"] = owner_id
        doc = await self.collection.find_one(query)
        if doc is None:
            return None
        stored = _stored_file(doc)
        update = stage_events(
            {"$set": {"status": "deleted", "deleted": stored_time(now)}, "$unset": {"idem": ""}},
            [event_for(stored)],
        )
        result = await self.collection.update_one(query, update)
        return stored if result.modified_count == 1 else None

    async def owned_by(self, owner_id: str) -> AsyncIterator[tuple[str, str]]:
        """(file id, status) of every file of ``owner_id`` not yet deleted."""
        cursor = self.collection.find(
            {"owner_id": owner_id, "status": {"$in": ["uploading", "ready"]}}, {"status": 1}
        )
        async for doc in cursor:
            yield doc["_id"], doc["status"]

    async def page(
        self, owner_id: str, *, limit: int, after: str | None
    ) -> tuple[list[StoredFile], str | None]:
        """The owner's ready files, newest first (ids sort by time), ``limit`` per page."""
        query: Document = {"owner_id": owner_id, "status": "ready"}
        if after is not None:
            query["_id"] = {"$lt": after}
        docs = await self.collection.find(query).sort("_id", -1).limit(limit + 1).to_list()
        items = [_stored_file(doc) for doc in docs[:limit]]
        return items, (items[-1].id if len(docs) > limit else None)

    async def deleted(self, limit: int) -> list[StoredFile]:
        docs = await self.collection.find({"status": "deleted"}).limit(limit).to_list()
        return [_stored_file(doc) for doc in docs]

    async def mark_purged(self, file_id: str, now: datetime) -> bool:
        """``deleted`` → ``purged`` once the blob is gone and the event was relayed."""
        result = await self.collection.update_one(
            {"_id": file_id, "status": "deleted", PENDING_FIELD: 0},
            {"$set": {"status": "purged", "purged": stored_time(now)}},
        )
        return result.modified_count == 1

    async def stale_uploads(self, before: datetime, limit: int) -> list[tuple[str, str]]:
        """(file id, owner id) of uploads that stopped saying they are alive before ``before``."""
        query = {"status": "uploading", **time_range("touched", before=before)}
        docs = await self.collection.find(query, {"owner_id": 1}).limit(limit).to_list()
        return [(doc["_id"], doc["owner_id"]) for doc in docs]

    async def live_upload(self, file_id: str, since: datetime) -> bool:
        query = {"_id": file_id, "status": "uploading", **time_range("touched", at_or_after=since)}
        return await self.collection.find_one(query, {"_id": 1}) is not None

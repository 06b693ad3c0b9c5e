"""Refresh-token families: one document each, rotated by compare-and-set."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from switchyard.envelope import Envelope
from switchyard.mongo import Index
from switchyard.mongo.client import asc
from switchyard.outbox import Expiry, stage_events

SESSIONS = "sessions"
# Kept a day past the absolute expiry so a late replay is still recognised, then removed
# by the outbox relay's sweep (never by a TTL index: a family may hold an unrelayed event).
EXPIRY = Expiry(SESSIONS, "expires_at", after_seconds=86400)
INDEXES = [Index(SESSIONS, asc("user_id"))]


class SessionRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[SESSIONS]

    async def create(
        self, family_id: str, *, user_id: str, token_hash: str, now: datetime, expires_at: datetime
    ) -> None:
        await self.collection.insert_one(
            {
                "_id": family_id,
                "user_id": user_id,
                "current_hash": token_hash,
                "generation": 1,
                "created_at": now,
                "last_used": {"at": now},
                "expires_at": expires_at,
                "revoked": None,
            }
        )

    async def rotate(
        self, family_id: str, *, token_hash: str, new_hash: str, now: datetime
    ) -> dict[str, Any] | None:
        """Swap the current token for a new one; None unless ``token_hash`` is current and live."""
        return await self.collection.find_one_and_update(
            {
                "_id": family_id,
                "current_hash": token_hash,
                "revoked": None,
                "expires_at": {"$gt": now},
            },
            # Times go in sub-documents: the embedded store turns a bare $set datetime into text.
            {
                "$set": {"current_hash": new_hash, "last_used": {"at": now}},
                "$inc": {"generation": 1},
            },
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )

    async def get(self, family_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": family_id}, {"outbox": 0})

    async def revoke(
        self,
        family_id: str,
        *,
        reason: str,
        now: datetime,
        token_hash: str | None = None,
        events: Sequence[Envelope] = (),
    ) -> bool:
        """Revoke a live family (only if ``token_hash`` is current, when given); True if done."""
        query: dict[str, Any] = {"_id": family_id, "revoked": None}
        if token_hash is not None:
            query["current_hash"] = token_hash
        result = await self.collection.update_one(
            query, stage_events({"$set": {"revoked": {"at": now, "reason": reason}}}, events)
        )
        return result.modified_count == 1

    async def revoke_all(self, user_id: str, *, reason: str, now: datetime) -> int:
        result = await self.collection.update_many(
            {"user_id": user_id, "revoked": None},
            {"$set": {"revoked": {"at": now, "reason": reason}}},
        )
        return result.modified_count

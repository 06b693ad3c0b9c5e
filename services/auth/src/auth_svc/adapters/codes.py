"""One-time codes: one document per (user, purpose), carrying its OTP event in its outbox.

Expired codes are deleted by the outbox relay's expiry sweep once their event is out
(a TTL index would delete a code whose email was never sent), and every delete goes
through ``delete_documents``, which keeps events not yet relayed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from switchyard.envelope import Envelope
from switchyard.mongo import Index
from switchyard.mongo.client import asc
from switchyard.outbox import Expiry, delete_documents, stage_events

CODES = "otp_codes"
# Reads check expires_at themselves; the sweep only cleans up (see outbox_indexes).
EXPIRY = Expiry(CODES, "code.expires_at")
INDEXES = [Index(CODES, asc("user_id"))]


class CodeRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[CODES]

    async def issue(
        self,
        key: str,
        *,
        user_id: str,
        purpose: str,
        code_hash: str,
        salt: str,
        now: datetime,
        expires_at: datetime,
        cooldown: float,
        event: Envelope,
    ) -> bool:
        """Replace the (user, purpose) code unless one was sent within ``cooldown`` seconds.

        The cooldown guard is in the filter: a recent code makes the filter miss,
        the upsert then collides with the existing ``_id`` and nothing is written.
        """
        # The times live in the "code" sub-document: a bare datetime given to $set is
        # stored as a string by the embedded store (see shared/tests/store).
        fields = {
            "user_id": user_id,
            "purpose": purpose,
            "attempts": 0,
            "code": {"hash": code_hash, "salt": salt, "sent_at": now, "expires_at": expires_at},
        }
        guard = {  # $and around the $or: bare, the embedded store matched other users' codes
            "$and": [
                {"_id": key},
                {
                    "$or": [
                        {"code.sent_at": {"$lte": now - timedelta(seconds=cooldown)}},
                        {"code.expires_at": {"$lte": now}},
                    ]
                },
            ]
        }
        try:
            await self.collection.update_one(
                guard, stage_events({"$set": fields}, [event]), upsert=True
            )
        except DuplicateKeyError:
            return False
        return True

    async def attempt(self, key: str, *, now: datetime, max_attempts: int) -> dict[str, Any] | None:
        """Count one try against a live code; None when there is none left to try."""
        return await self.collection.find_one_and_update(
            {"_id": key, "attempts": {"$lt": max_attempts}, "code.expires_at": {"$gt": now}},
            {"$inc": {"attempts": 1}},
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )

    async def consume(self, key: str, code_hash: str) -> bool:
        """Single use: only one caller deletes the code."""
        return await delete_documents(self.collection, {"_id": key, "code.hash": code_hash}) == 1

    async def discard(self, key: str) -> None:
        await delete_documents(self.collection, {"_id": key})

    async def discard_for_user(self, user_id: str) -> None:
        await delete_documents(self.collection, {"user_id": user_id})

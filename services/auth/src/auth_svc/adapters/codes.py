"""One-time codes: one document per (user, purpose), carrying its OTP event in its outbox.

Expired codes are deleted by the outbox relay's expiry sweep once their event is out
(a TTL index would delete a code whose email was never sent), and every delete goes
through ``delete_documents``, which keeps events not yet relayed.

How often codes may be issued (the cooldown and the hourly cap) and how many wrong guesses
an account may take are counted in ``attempt_budgets``, which outlive any one code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

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
        event: Envelope,
    ) -> None:
        """Replace the (user, purpose) code with a new one (the issuing budget said yes)."""
        # The times live in the "code" sub-document: a bare datetime given to $set is
        # stored as a string by the embedded store (see shared/tests/store).
        fields = {
            "user_id": user_id,
            "purpose": purpose,
            "attempts": 0,
            "code": {"hash": code_hash, "salt": salt, "sent_at": now, "expires_at": expires_at},
        }
        await self.collection.update_one(
            {"_id": key}, stage_events({"$set": fields}, [event]), upsert=True
        )

    async def extend(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        """Keep the live code valid until ``expires_at`` (no new code may be mailed now, and
        the owner has the last one); True when there was one."""
        record = await self.live(key, now=now)
        if record is None:
            return False
        code = {**record["code"], "expires_at": max(expires_at, record["code"]["expires_at"])}
        # The whole sub-document, so its dates stay dates on the embedded store.
        result = await self.collection.update_one(
            {"_id": key, "code.hash": code["hash"]}, {"$set": {"code": code}}
        )
        return result.modified_count == 1

    async def live(self, key: str, *, now: datetime) -> dict[str, Any] | None:
        """The live code without counting a try (sign-in codes: 80 bits, no tries to count)."""
        return await self.collection.find_one(
            {"_id": key, "code.expires_at": {"$gt": now}}, {"outbox": 0}
        )

    async def attempt(self, key: str, *, now: datetime, max_attempts: int) -> dict[str, Any] | None:
        """Count one try against a live code; None when there is none left to try."""
        return await self.collection.find_one_and_update(
            {"_id": key, "attempts": {"$lt": max_attempts}, "code.expires_at": {"$gt": now}},
            {"$inc": {"attempts": 1}},
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )

    async def untry(self, key: str, code_hash: str) -> None:
        """Give back the try of a right code whose request failed for another reason."""
        await self.collection.update_one(
            {"_id": key, "code.hash": code_hash, "attempts": {"$gt": 0}},
            {"$inc": {"attempts": -1}},
        )

    async def consume(self, key: str, code_hash: str) -> bool:
        """Single use: only one caller deletes the code."""
        return await delete_documents(self.collection, {"_id": key, "code.hash": code_hash}) == 1

    async def discard(self, key: str) -> None:
        await delete_documents(self.collection, {"_id": key})

    async def discard_for_user(self, user_id: str) -> None:
        await delete_documents(self.collection, {"user_id": user_id})

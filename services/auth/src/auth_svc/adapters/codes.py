"""One-time codes: one document per (user, purpose), carrying its OTP event in its outbox.

Expired codes are deleted by the outbox relay's expiry sweep once their event is out
(a TTL index would delete a code whose email was never sent), and every delete goes
through ``delete_documents``, which keeps events not yet relayed.

How often codes may be issued (the cooldown and the hourly cap) and how many wrong guesses
an account may take are counted in ``attempt_budgets``, which outlive any one code.

Stored shape: ``{_id: "<user>:<purpose>", user_id, purpose, attempts, code: {hash, salt,
sent, expires}}``, the times stored times (``switchyard.mongo.dates``); the ``code``
sub-document is always written whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from auth_svc.domain.codes import StoredCode, hash_code, new_salt
from switchyard.envelope import Envelope
from switchyard.mongo import Index, loaded_time, stored_time, time_range
from switchyard.mongo.client import Document, asc
from switchyard.outbox import Expiry, delete_documents, stage_events

CODES = "otp_codes"
# Reads check the expiry themselves; the sweep only cleans up (see outbox_indexes).
EXPIRY = Expiry(CODES, "code.expires")
INDEXES = [Index(CODES, asc("user_id"))]
# The stand-in code documents' user (not a user id: ids are 32 hex digits).
NOBODY = "nobody"


def _code_fields(code_hash: str, salt: str, sent_at: datetime, expires_at: datetime) -> Document:
    return {
        "hash": code_hash,
        "salt": salt,
        "sent": stored_time(sent_at),
        "expires": stored_time(expires_at),
    }


def _stored_code(document: Mapping[str, Any] | None) -> StoredCode | None:
    if document is None:
        return None
    code = document["code"]
    return StoredCode(
        key=document["_id"],
        user_id=document["user_id"],
        purpose=document["purpose"],
        code_hash=code["hash"],
        salt=code["salt"],
        attempts=int(document.get("attempts", 0)),
        sent_at=loaded_time(code["sent"]),
        expires_at=loaded_time(code["expires"]),
    )


class CodeRepository:
    """The otp_codes collection (implements ``handlers.ports.Codes``)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
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
        fields = {
            "user_id": user_id,
            "purpose": purpose,
            "attempts": 0,
            "code": _code_fields(code_hash, salt, now, expires_at),
        }
        await self.collection.update_one(
            {"_id": key}, stage_events({"$set": fields}, [event]), upsert=True
        )

    async def extend(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        """Keep the live code valid until ``expires_at`` (no new code may be mailed now, and
        the owner has the last one); True when there was one."""
        live = await self.live(key, now=now)
        if live is None:
            return False
        code = _code_fields(
            live.code_hash, live.salt, live.sent_at, max(expires_at, live.expires_at)
        )
        result = await self.collection.update_one(
            {"_id": key, "code.hash": live.code_hash}, {"$set": {"code": code}}
        )
        return result.modified_count == 1

    async def carry(
        self, code: StoredCode, *, key: str, user_id: str, expires_at: datetime
    ) -> None:
        """Store ``code`` (its hash, salt and tries) as the live code ``key`` of ``user_id``,
        mailing nothing: the owner of the address already has it."""
        fields = {
            "user_id": user_id,
            "purpose": code.purpose,
            "attempts": code.attempts,
            "code": _code_fields(
                code.code_hash, code.salt, code.sent_at, max(expires_at, code.expires_at)
            ),
        }
        await self.collection.update_one({"_id": key}, {"$set": fields}, upsert=True)

    async def live(self, key: str, *, now: datetime) -> StoredCode | None:
        """The live code without counting a try (sign-in codes: 80 bits, no tries to count)."""
        return _stored_code(
            await self.collection.find_one(
                {"_id": key, **time_range("code.expires", after=now)}, {"outbox": 0}
            )
        )

    async def attempt(self, key: str, *, now: datetime, max_attempts: int) -> StoredCode | None:
        """Count one try against a live code; None when there is none left to try."""
        return _stored_code(
            await self.collection.find_one_and_update(
                {
                    "_id": key,
                    "attempts": {"$lt": max_attempts},
                    **time_range("code.expires", after=now),
                },
                {"$inc": {"attempts": 1}},
                projection={"outbox": 0},
                return_document=ReturnDocument.AFTER,
            )
        )

    async def attempt_nobody(self, purpose: str, *, now: datetime, ttl: float) -> StoredCode:
        """The work of :meth:`attempt` for an address without an account (a guarded
        increment returning a code), on a stand-in document no code can match: a wrong code
        costs the same whether or not an account would have had one."""
        return await self._nobody(purpose, now=now, ttl=ttl, count=True)

    async def live_nobody(self, purpose: str, *, now: datetime, ttl: float) -> StoredCode:
        """The work of :meth:`live` for an address without an account (a stand-in code)."""
        return await self._nobody(purpose, now=now, ttl=ttl, count=False)

    async def _nobody(self, purpose: str, *, now: datetime, ttl: float, count: bool) -> StoredCode:
        key = f"{NOBODY}:{purpose}"
        live = {"_id": key, **time_range("code.expires", after=now)}
        if count:
            document = await self.collection.find_one_and_update(
                live,
                {"$inc": {"attempts": 1}},
                projection={"outbox": 0},
                return_document=ReturnDocument.AFTER,
            )
        else:
            document = await self.collection.find_one(live, {"outbox": 0})
        if document is None:  # first use, or swept after its expiry: a new stand-in
            salt = new_salt()
            fields = _code_fields(
                hash_code(new_salt(), salt), salt, now, now + timedelta(seconds=ttl)
            )
            document = await self.collection.find_one_and_update(
                {"_id": key},
                {"$set": {"user_id": NOBODY, "purpose": purpose, "code": fields, "attempts": 0}},
                projection={"outbox": 0},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        stored = _stored_code(document)
        assert stored is not None
        return stored

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

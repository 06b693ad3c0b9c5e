"""Refresh-token families: one document each, rotated by compare-and-set.

Besides the current token's hash a family keeps a short prefix of the hash of every token it
rotated away (``rotated.<prefix>``, until the family expires): a presented token that is
neither current nor one of those was never issued, so it proves nothing about the family
and changes nothing. ``access.until`` is the latest expiry of an access token issued for the
session: what ``auth.session.revoked`` tells verifiers to deny until.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from switchyard.envelope import Envelope
from switchyard.mongo import Index
from switchyard.mongo.client import asc
from switchyard.outbox import Expiry, stage_events, with_events

SESSIONS = "sessions"
# Kept a day past the absolute expiry so a late replay is still recognised, then removed
# by the outbox relay's sweep (never by a TTL index: a family may hold an unrelayed event).
EXPIRY = Expiry(SESSIONS, "expires_at", after_seconds=86400)
INDEXES = [Index(SESSIONS, asc("user_id"))]
# 128 bits of a rotated token's SHA-256: enough to recognise it, half the storage.
ROTATED_PREFIX = 32
# Fields a reader never needs (the outbox, and the rotated-token map that grows with use).
_LEAN = {"outbox": 0, "rotated": 0}


@dataclass(frozen=True)
class LiveSession:
    family_id: str
    user_id: str
    # None for a family stored before this was recorded.
    access_until: datetime | None


class SessionRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[SESSIONS]

    async def create(
        self,
        family_id: str,
        *,
        user_id: str,
        token_hash: str,
        now: datetime,
        expires_at: datetime,
        access_until: datetime,
    ) -> None:
        await self.collection.insert_one(
            with_events(
                {
                    "_id": family_id,
                    "user_id": user_id,
                    "current_hash": token_hash,
                    "generation": 1,
                    "created_at": now,
                    "last_used": {"at": now},
                    "access": {"until": access_until},
                    "expires_at": expires_at,
                    "revoked": None,
                },
                (),
            )
        )

    async def rotate(
        self,
        family_id: str,
        *,
        token_hash: str,
        new_hash: str,
        now: datetime,
        access_until: datetime,
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
                "$set": {
                    "current_hash": new_hash,
                    "last_used": {"at": now},
                    "access": {"until": access_until},
                    f"rotated.{token_hash[:ROTATED_PREFIX]}": 1,
                },
                "$inc": {"generation": 1},
            },
            projection=_LEAN,
            return_document=ReturnDocument.AFTER,
        )

    async def get(self, family_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": family_id}, _LEAN)

    async def rotated_away(self, family_id: str, token_hash: str) -> dict[str, Any] | None:
        """The family, if ``token_hash`` is a token it issued and rotated away."""
        return await self.collection.find_one(
            {"_id": family_id, f"rotated.{token_hash[:ROTATED_PREFIX]}": {"$exists": True}},
            _LEAN,
        )

    async def live(self, user_id: str, now: datetime) -> list[LiveSession]:
        cursor = self.collection.find(
            {"user_id": user_id, "revoked": None, "expires_at": {"$gt": now}},
            {"_id": 1, "user_id": 1, "access": 1},
        )
        return [_session(document) async for document in cursor]

    async def revoke(
        self,
        family_id: str,
        *,
        reason: str,
        now: datetime,
        token_hash: str | None = None,
        events: Callable[[LiveSession], Sequence[Envelope]] = lambda session: (),
    ) -> LiveSession | None:
        """Revoke a live family (only if ``token_hash`` is current, when given), staging
        ``events(session)`` with it; the session when done, None when there was none to end."""
        query: dict[str, Any] = {"_id": family_id, "revoked": None}
        if token_hash is not None:
            query["current_hash"] = token_hash
        # Read first, to build the events from what the family is; the update is guarded on
        # the same generation, so a rotation in between makes us read again.
        for _ in range(5):
            document = await self.collection.find_one(
                query, {"user_id": 1, "access": 1, "generation": 1}
            )
            if document is None:
                return None
            session = _session(document)
            result = await self.collection.update_one(
                {**query, "generation": document["generation"]},
                stage_events({"$set": {"revoked": {"at": now, "reason": reason}}}, events(session)),
            )
            if result.modified_count == 1:
                return session
        return None

    async def revoke_all(
        self,
        user_id: str,
        *,
        reason: str,
        now: datetime,
        announced: frozenset[str] = frozenset(),
        events: Callable[[LiveSession], Sequence[Envelope]] = lambda session: (),
    ) -> list[LiveSession]:
        """Revoke every live family of the user, one guarded write each; families not in
        ``announced`` (already published with the user document) get ``events`` staged."""
        ended = []
        cursor = self.collection.find({"user_id": user_id, "revoked": None}, {"_id": 1})
        for family_id in [document["_id"] async for document in cursor]:
            session = await self.revoke(
                family_id,
                reason=reason,
                now=now,
                events=(lambda s: ()) if family_id in announced else events,
            )
            if session is not None:
                ended.append(session)
        return ended


def _session(document: dict[str, Any]) -> LiveSession:
    until = (document.get("access") or {}).get("until")
    return LiveSession(
        document["_id"], document["user_id"], until if isinstance(until, datetime) else None
    )

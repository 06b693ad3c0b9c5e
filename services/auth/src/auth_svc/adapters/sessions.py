"""Refresh-token families: one document each, rotated by compare-and-set.

A family document holds only its *current* token's hash. Every token it rotated away is
recorded in a collection of its own, ``rotated_refresh_tokens`` (``_id`` = the token's
SHA-256, with its family, user and the family's expiry): a presented token that is neither
current nor recorded there was never issued, so it proves nothing about the family and
changes nothing. Kept apart, the records cannot be mistaken for a live token, do not grow
the family document with every rotation, and outlive whatever happens to the family
document (they expire on their own, a day past the family). ``access_until`` is the latest
expiry of an access token issued for the session: what ``auth.session.revoked`` tells
verifiers to deny until.

Stored shapes: ``sessions`` ``{_id, user_id, current_hash, generation, created, last_used,
access_until, expires, revoked, revoked_reason}``; ``rotated_refresh_tokens`` ``{_id,
family_id, user_id, rotated, expires}``; the times are stored times
(``switchyard.mongo.dates``), ``revoked`` is null while the family is live.

The record is written after the compare-and-set that rotated the token away: a crash in
between forgets that one token (presented again it gets a plain 401, not a reuse alarm) —
never the other way round, which would let a forged token end a family.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from auth_svc.domain.sessions import LiveSession, SessionEvents, SessionFamily
from switchyard.mongo import Index, loaded_time, stored_time, time_range, time_sort_key
from switchyard.mongo.client import Document, asc
from switchyard.outbox import Expiry, stage_events, with_events

SESSIONS = "sessions"
ROTATED = "rotated_refresh_tokens"
# Kept a day past the absolute expiry so a late replay is still recognised, then removed
# by the outbox relay's sweep (never by a TTL index: a family may hold an unrelayed event).
EXPIRY = Expiry(SESSIONS, "expires", after_seconds=86400)
ROTATED_EXPIRY = Expiry(ROTATED, "expires", after_seconds=86400)
INDEXES = [
    Index(SESSIONS, asc("user_id")),
    # The revoked-session list every replica of every service pages through at start and
    # after each reconnection: revoked families whose access tokens may still be alive.
    Index(SESSIONS, asc(time_sort_key("access_until"))),
]
# Fields a reader never needs.
_LEAN = {"outbox": 0}
_LIVE_FIELDS = {"_id": 1, "user_id": 1, "access_until": 1}


def _no_events(session: LiveSession) -> tuple[()]:
    return ()


def _family(document: Mapping[str, Any]) -> SessionFamily:
    return SessionFamily(
        id=document["_id"],
        user_id=document["user_id"],
        created_at=loaded_time(document["created"]),
        expires_at=loaded_time(document["expires"]),
        revoked=document.get("revoked") is not None,
    )


def _session(document: Mapping[str, Any]) -> LiveSession:
    return LiveSession(document["_id"], document["user_id"], loaded_time(document["access_until"]))


class SessionRepository:
    """The sessions collection (implements ``handlers.ports.Sessions``)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[SESSIONS]
        self.rotated = db[ROTATED]

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
                    "created": stored_time(now),
                    "last_used": stored_time(now),
                    "access_until": stored_time(access_until),
                    "expires": stored_time(expires_at),
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
    ) -> SessionFamily | None:
        document = await self.collection.find_one_and_update(
            {
                "_id": family_id,
                "current_hash": token_hash,
                "revoked": None,
                **time_range("expires", after=now),
            },
            {
                "$set": {
                    "current_hash": new_hash,
                    "last_used": stored_time(now),
                    "access_until": stored_time(access_until),
                },
                "$inc": {"generation": 1},
            },
            projection=_LEAN,
            return_document=ReturnDocument.AFTER,
        )
        if document is None:
            return None
        family = _family(document)
        await self.rotated.update_one(
            {"_id": token_hash},
            {
                "$setOnInsert": {
                    "family_id": family.id,
                    "user_id": family.user_id,
                    "rotated": stored_time(now),
                    "expires": document["expires"],
                }
            },
            upsert=True,
        )
        return family

    async def get(self, family_id: str) -> SessionFamily | None:
        document = await self.collection.find_one({"_id": family_id}, _LEAN)
        return _family(document) if document is not None else None

    async def rotated_away(self, family_id: str, token_hash: str) -> SessionFamily | None:
        record = await self.rotated.find_one({"_id": token_hash, "family_id": family_id})
        if record is None:
            return None
        return await self.get(family_id)

    async def live(self, user_id: str, now: datetime) -> list[LiveSession]:
        cursor = self.collection.find(
            {"user_id": user_id, "revoked": None, **time_range("expires", after=now)},
            _LIVE_FIELDS,
        )
        return [_session(document) async for document in cursor]

    async def revoked(self, now: datetime, *, after: str | None, limit: int) -> list[LiveSession]:
        """Families revoked whose access tokens may still be alive, in id order after ``after``."""
        query: Document = {
            **time_range("revoked", at_or_before=now),
            **time_range("access_until", after=now),
        }
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.collection.find(query, _LIVE_FIELDS).sort("_id", 1).limit(limit)
        return [_session(document) async for document in cursor]

    async def revoke(
        self,
        family_id: str,
        *,
        reason: str,
        now: datetime,
        token_hash: str | None = None,
        events: SessionEvents = _no_events,
    ) -> LiveSession | None:
        query: Document = {"_id": family_id, "revoked": None}
        if token_hash is not None:
            query["current_hash"] = token_hash
        # Read first, to build the events from what the family is; the update is guarded on
        # the same generation, so a rotation in between makes us read again.
        for _ in range(5):
            document = await self.collection.find_one(query, {**_LIVE_FIELDS, "generation": 1})
            if document is None:
                return None
            session = _session(document)
            result = await self.collection.update_one(
                {**query, "generation": document["generation"]},
                stage_events(
                    {"$set": {"revoked": stored_time(now), "revoked_reason": reason}},
                    events(session),
                ),
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
        events: SessionEvents = _no_events,
    ) -> list[LiveSession]:
        ended = []
        cursor = self.collection.find({"user_id": user_id, "revoked": None}, {"_id": 1})
        for family_id in [document["_id"] async for document in cursor]:
            session = await self.revoke(
                family_id,
                reason=reason,
                now=now,
                events=_no_events if family_id in announced else events,
            )
            if session is not None:
                ended.append(session)
        return ended

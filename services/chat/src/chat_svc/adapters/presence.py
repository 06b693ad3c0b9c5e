"""Presence across replicas.

``connections``: one document per connected socket (any replica), with an ``expires`` its
replica pushes forward on every heartbeat. A replica that dies stops refreshing; any live
replica's sweep deletes the expired documents (the one whose ``delete_one`` succeeds owns
the consequence) — so a killed replica's users go offline within TTL + one sweep.

``presence``: one document per user — ``online``, ``last_seen`` and a ``generation`` that
every connect increments. Going offline is a guarded update on the generation read before
counting the user's remaining connections, so a connect racing a disconnect on another
replica can never leave a connected user marked offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from switchyard.mongo import loaded_time, stored_time, time_range
from switchyard.mongo.client import Document, Index, asc
from switchyard.mongo.dates import time_sort_key

CONNECTIONS = "connections"
PRESENCE = "presence"
_MOMENT = timedelta(microseconds=1)


def presence_indexes() -> list[Index]:
    return [
        Index(CONNECTIONS, asc("user_id")),
        Index(CONNECTIONS, asc("replica")),
        Index(CONNECTIONS, asc(time_sort_key("expires"))),
    ]


@dataclass(frozen=True)
class PresenceChange:
    user_id: str
    online: bool
    last_seen: datetime | None


class Presence:
    def __init__(self, db: AsyncDatabase[Document], replica: str, ttl: float) -> None:
        self.connections = db[CONNECTIONS]
        self.users = db[PRESENCE]
        self.replica = replica
        self.ttl = timedelta(seconds=ttl)
        # Sockets per user on this replica: such a user is online without asking the store.
        self._local: dict[str, int] = {}

    def _key(self, sid: str) -> str:
        return f"{self.replica}:{sid}"

    async def connected(self, user_id: str, sid: str, now: datetime) -> PresenceChange | None:
        """Record the socket; a change when the user was offline until now."""
        self._local[user_id] = self._local.get(user_id, 0) + 1
        await self.connections.replace_one(
            {"_id": self._key(sid)},
            {
                "_id": self._key(sid),
                "user_id": user_id,
                "replica": self.replica,
                "sid": sid,
                "connected": stored_time(now),
                "expires": stored_time(now + self.ttl),
            },
            upsert=True,
        )
        before = await self.users.find_one_and_update(
            {"_id": user_id},
            {"$set": {"online": True}, "$inc": {"generation": 1}},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        if before is None or not before.get("online"):
            return PresenceChange(user_id, True, _last_seen(before))
        return None

    async def disconnected(self, user_id: str, sid: str, now: datetime) -> PresenceChange | None:
        left = self._local.get(user_id, 0) - 1
        if left > 0:
            self._local[user_id] = left
        else:
            self._local.pop(user_id, None)
        result = await self.connections.delete_one({"_id": self._key(sid)})
        if result.deleted_count != 1:
            return None  # swept already: the sweep owned the consequence
        return await self._maybe_offline(user_id, now)

    async def _maybe_offline(self, user_id: str, now: datetime) -> PresenceChange | None:
        state = await self.users.find_one({"_id": user_id})
        if state is None or not state.get("online"):
            return None
        if await self._live_connection(user_id, now):
            return None
        result = await self.users.update_one(
            {"_id": user_id, "online": True, "generation": state.get("generation", 0)},
            {"$set": {"online": False, "last_seen": stored_time(now)}},
        )
        if result.modified_count != 1:
            return None  # a connect came in meanwhile
        return PresenceChange(user_id, False, now)

    async def _live_connection(self, user_id: str, now: datetime) -> bool:
        found = await self.connections.find_one(
            {"$and": [{"user_id": user_id}, time_range("expires", after=now)]}, {"_id": 1}
        )
        return found is not None

    async def heartbeat(self, now: datetime) -> None:
        await self.connections.update_many(
            {"replica": self.replica}, {"$set": {"expires": stored_time(now + self.ttl)}}
        )

    async def sweep(self, now: datetime) -> list[PresenceChange]:
        """Delete connections whose replica stopped refreshing them; the users that went
        offline because of it."""
        changes: list[PresenceChange] = []
        expired = self.connections.find(time_range("expires", before=now), {"user_id": 1})
        for doc in [d async for d in expired]:
            result = await self.connections.delete_one(
                {"$and": [{"_id": doc["_id"]}, time_range("expires", before=now)]}
            )
            if result.deleted_count == 1:
                change = await self._maybe_offline(doc["user_id"], now)
                if change is not None:
                    changes.append(change)
        return changes

    async def forget_replica(self, now: datetime) -> None:
        """On a clean stop: this replica's sockets are gone; the next sweep (of any replica)
        takes their users offline."""
        await self.connections.update_many(
            {"replica": self.replica}, {"$set": {"expires": stored_time(now - _MOMENT)}}
        )

    async def online_among(self, user_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(user_ids))
        online = {uid for uid in ids if uid in self._local}
        elsewhere = [uid for uid in ids if uid not in online]
        if elsewhere:
            cursor = self.users.find({"_id": {"$in": elsewhere}, "online": True}, {"_id": 1})
            online |= {doc["_id"] async for doc in cursor}
        return online

    async def state(self, user_id: str) -> tuple[bool, datetime | None]:
        doc = await self.users.find_one({"_id": user_id})
        return (bool(doc and doc.get("online")), _last_seen(doc))

    async def sids_of(self, user_id: str) -> list[str]:
        """Every socket id of the user, on any replica."""
        return [doc["sid"] async for doc in self.connections.find({"user_id": user_id}, {"sid": 1})]


def _last_seen(doc: Document | None) -> datetime | None:
    if doc and doc.get("last_seen"):
        return loaded_time(doc["last_seen"])
    return None

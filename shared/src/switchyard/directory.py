"""A service's read model of users, kept from auth's events (``auth.user.*``).

Every service that needs to know about users (names to show, roles to check, where to
send mail, whether the account still exists) keeps its own copy in its own database —
no service reads auth's. This module is that copy, once:

    directory = UserDirectory(db["chat_users"])
    registry.add("users", CATALOG.types_of(USER_EVENTS), partial(follow_user_event, directory=directory))
    user = await directory.get(user_id)        # DirectoryUser | None

Events can arrive out of order and more than once, so every write is guarded by the time
of the event that produced it (profile and status separately), and a deleted user stays a
tombstone — just the id and ``status: deleted`` — that no later event revives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard.bus.errors import PermanentError
from switchyard.envelope import Event, utcnow
from switchyard.events.auth import UserDeleted, UserRegistered, UserUpdated, UserVerified
from switchyard.mongo.client import Document
from switchyard.mongo.dates import stored_time, time_range

UserStatus = Literal["pending_verification", "active", "deleted"]

# The auth events a directory follows (bind a queue to CATALOG.types_of(USER_EVENTS)).
USER_EVENTS = (UserRegistered, UserVerified, UserUpdated, UserDeleted)


@dataclass(frozen=True)
class DirectoryUser:
    user_id: str
    status: UserStatus
    email: str | None = None
    display_name: str | None = None
    roles: tuple[str, ...] = ()

    @property
    def deleted(self) -> bool:
        return self.status == "deleted"

    def has_role(self, role: str) -> bool:
        return not self.deleted and role in self.roles


def _older_than(field: str, moment: datetime) -> Document:
    return {"$or": [{field: {"$exists": False}}, time_range(field, before=moment)]}


class UserDirectory:
    """The ``<service>_users`` collection (only the ``_id`` index is needed)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def get(self, user_id: str) -> DirectoryUser | None:
        doc = await self.collection.find_one({"_id": user_id})
        return _user(doc) if doc else None

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, DirectoryUser]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        return {doc["_id"]: _user(doc) async for doc in self.collection.find({"_id": {"$in": ids}})}

    async def with_role(
        self, role: str, *, after: str | None = None, limit: int = 500
    ) -> list[DirectoryUser]:
        """A page of the users holding ``role``, in id order after ``after`` (tombstones hold
        no roles). A full scan: fine for fan-outs, not for a request's hot path."""
        query: Document = {"roles": {"$all": [role]}}
        if after is not None:
            query = {"$and": [query, {"_id": {"$gt": after}}]}
        cursor = self.collection.find(query).sort("_id", 1).limit(limit)
        return [_user(doc) async for doc in cursor]

    async def record_profile(
        self,
        user_id: str,
        *,
        email: str,
        display_name: str,
        roles: Sequence[str] | None = None,
        as_of: datetime,
    ) -> bool:
        """Record who the user is, unless a newer profile or a deletion is known.
        ``roles=None`` (an event that does not carry them) leaves the stored roles."""
        fields: Document = {
            "email": email,
            "display_name": display_name,
            "profile_as_of": stored_time(as_of),
        }
        if roles is not None:
            fields["roles"] = list(roles)
        return await self._guarded_upsert(
            user_id,
            _older_than("profile_as_of", as_of),
            fields,
            default_status="pending_verification",
        )

    async def record_status(self, user_id: str, status: UserStatus, *, as_of: datetime) -> bool:
        return await self._guarded_upsert(
            user_id,
            _older_than("status_as_of", as_of),
            {"status": status, "status_as_of": stored_time(as_of)},
        )

    async def erase(self, user_id: str, *, deleted_at: datetime) -> None:
        """Keep only a tombstone: the id, so late events for this user are recognised."""
        await self.collection.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "status": "deleted",
                    "erased": stored_time(deleted_at),
                    "updated": stored_time(utcnow()),
                },
                "$unset": {
                    "email": "",
                    "display_name": "",
                    "roles": "",
                    "profile_as_of": "",
                    "status_as_of": "",
                },
            },
            upsert=True,
        )

    async def _guarded_upsert(
        self,
        user_id: str,
        guard: Document,
        fields: Document,
        *,
        default_status: UserStatus | None = None,
    ) -> bool:
        # $and, not a bare $or beside other conditions: the embedded store loses that
        # grouping and updated another user's document (store contract tests pin it).
        query: Document = {"$and": [{"_id": user_id}, {"erased": {"$exists": False}}, guard]}
        update: Document = {"$set": {**fields, "updated": stored_time(utcnow())}}
        if default_status is not None:
            update["$setOnInsert"] = {"status": default_status}
        try:
            result = await self.collection.update_one(query, update, upsert=True)
        except DuplicateKeyError:
            return False  # the document exists and the guard said no: stale event or tombstone
        return result.modified_count == 1 or result.upserted_id is not None


def _user(doc: Mapping[str, Any]) -> DirectoryUser:
    return DirectoryUser(
        user_id=doc["_id"],
        status=doc.get("status", "pending_verification"),
        email=doc.get("email"),
        display_name=doc.get("display_name"),
        roles=tuple(doc.get("roles", ())),
    )


async def apply_user_event(
    directory: UserDirectory, data: UserRegistered | UserVerified | UserUpdated | UserDeleted
) -> None:
    """Apply one auth user event to the directory (idempotent, order-insensitive)."""
    if isinstance(data, UserRegistered):
        await directory.record_profile(
            data.user_id,
            email=str(data.email),
            display_name=data.display_name,
            roles=data.roles,
            as_of=data.registered_at,
        )
        await directory.record_status(
            data.user_id, "pending_verification", as_of=data.registered_at
        )
    elif isinstance(data, UserVerified):
        await directory.record_profile(
            data.user_id,
            email=str(data.email),
            display_name=data.display_name,
            as_of=data.verified_at,
        )
        await directory.record_status(data.user_id, "active", as_of=data.verified_at)
    elif isinstance(data, UserUpdated):
        await directory.record_profile(
            data.user_id,
            email=str(data.email),
            display_name=data.display_name,
            roles=data.roles,
            as_of=data.updated_at,
        )
    else:
        await directory.erase(data.user_id, deleted_at=data.deleted_at)


async def follow_user_event(event: Event[Any], *, directory: UserDirectory) -> None:
    """A bus handler for a queue bound to ``USER_EVENTS``."""
    if not isinstance(event.data, USER_EVENTS):
        raise PermanentError(f"the user directory does not follow {event.type}")
    await apply_user_event(directory, event.data)

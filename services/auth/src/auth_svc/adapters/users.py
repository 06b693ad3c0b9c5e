"""The users collection: one document per account, carrying its own outbox.

Accounts are found by ``email_key`` (NFKC-normalised, case-folded: look-alike addresses are
one account), unique where present. Documents written before the key existed get it when a
replica starts (:func:`backfill_email_keys`); until then they are found by ``email``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from auth_svc.domain.errors import EmailTaken
from auth_svc.domain.users import User, email_key, normalise_email
from switchyard.envelope import Envelope
from switchyard.mongo import Index
from switchyard.mongo.client import asc
from switchyard.outbox import stage_events, with_events

log = logging.getLogger("auth.users")

USERS = "users"
INDEXES = [
    Index(USERS, asc("email"), unique=True),
    Index(USERS, asc("email_key"), unique=True, sparse=True),
    # No index on "roles": on the embedded store, find() through an index on an array
    # field misses documents that count_documents() sees.
]


def to_store(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Timestamps (``*_at``) are stored as ``{"<name>": {"at": value}}`` sub-documents.

    The embedded store keeps a bare datetime given to ``$set`` as a string (pinned in
    shared/tests/store); inside a sub-document it stays a date on every backend.
    """
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name.endswith("_at"):
            out[name[:-3]] = {"at": value}
        else:
            out[name] = value
    return out


def from_store(document: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in document.items():
        if isinstance(value, Mapping) and set(value) == {"at"}:
            out[f"{name}_at"] = value["at"]
        else:
            out[name] = value
    return out


def _user(document: Mapping[str, Any] | None) -> User | None:
    return User.from_document(from_store(document)) if document else None


class UserRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[USERS]

    async def insert(self, document: Mapping[str, Any], events: Sequence[Envelope]) -> User:
        stored = {**document, "email_key": email_key(document["email"])}
        try:
            await self.collection.insert_one(with_events(to_store(stored), events))
        except DuplicateKeyError:
            raise EmailTaken(document["email"]) from None
        return User.from_document(dict(document))

    async def by_email(self, email: str) -> User | None:
        """The account of ``email`` or of any look-alike of it."""
        query = {
            "$or": [
                {"email_key": email_key(email)},
                # Written by an earlier version, not yet given its key.
                {"email": normalise_email(email), "email_key": {"$exists": False}},
            ]
        }
        return _user(await self.collection.find_one(query, {"outbox": 0}))

    async def by_id(self, user_id: str) -> User | None:
        return _user(await self.collection.find_one({"_id": user_id}, {"outbox": 0}))

    async def update(
        self,
        user_id: str,
        *,
        expect: Mapping[str, Any] | None = None,
        set_fields: Mapping[str, Any] | None = None,
        unset_fields: Sequence[str] = (),
        events: Sequence[Envelope] = (),
        expect_version: int | None = None,
    ) -> User | None:
        """One guarded single-document update with its events; None when ``expect`` (or
        ``expect_version``, the version the caller read) failed. Every update counts a
        version, so a write guarded on it commits exactly the state its events describe."""
        update: dict[str, Any] = {"$inc": {"version": 1}}
        if set_fields:
            update["$set"] = to_store(set_fields)
            if "email" in set_fields:
                update["$set"]["email_key"] = email_key(set_fields["email"])
        if unset_fields:
            update["$unset"] = {name: "" for name in to_store(dict.fromkeys(unset_fields))}
        guard: dict[str, Any] = {"_id": user_id, **to_store(expect or {})}
        if expect_version is not None:
            guard["version"] = expect_version if expect_version else {"$exists": False}
        document = await self.collection.find_one_and_update(
            guard,
            stage_events(update, events),
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
        return _user(document)

    async def page(
        self, *, limit: int, after: str | None, status: str | None, role: str | None
    ) -> list[User]:
        query: dict[str, Any] = {}
        if after:
            query["_id"] = {"$gt": after}
        if status:
            query["status"] = status
        if role:
            query["roles"] = role
        cursor = self.collection.find(query, {"outbox": 0}).sort("_id", 1).limit(limit)
        return [User.from_document(from_store(document)) async for document in cursor]

    async def any_admin(self) -> bool:
        return await self.collection.find_one({"roles": "admin"}, {"_id": 1}) is not None


async def backfill_email_keys(db: AsyncDatabase[dict[str, Any]]) -> int:
    """Give every account written before ``email_key`` existed its key; the number given.

    Two old accounts whose addresses are look-alikes cannot both have the key: the second
    keeps none (it is still found by its exact address) and is logged for an operator.
    """
    collection = db[USERS]
    done = 0
    async for document in collection.find({"email_key": {"$exists": False}}, {"email": 1}):
        try:
            result = await collection.update_one(
                {"_id": document["_id"], "email_key": {"$exists": False}},
                {"$set": {"email_key": email_key(document["email"])}},
            )
            done += result.modified_count
        except DuplicateKeyError:
            log.error(
                "an account's address is a look-alike of another's; it keeps no comparison key",
                extra={"user_id": document["_id"]},
            )
    return done

"""The users collection: one document per account, carrying its own outbox.

Accounts are found by ``email_key`` (NFKC-normalised, case-folded: look-alike addresses are
one account), unique where present. Documents written before the key existed get it when a
replica starts (:func:`backfill_email_keys`); until then they are found by ``email``.

The stored shape lives here alone (:func:`user_document`, :func:`stored_user`,
:func:`change_update`); commands speak in ``User`` and ``UserChange``. Times are stored times
(``switchyard.mongo.dates``): ``created``, ``updated``, ``verified``, ``deleted``,
``sessions_revoked``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from auth_svc.domain.errors import EmailTaken
from auth_svc.domain.users import User, UserChange, UserStatus, email_key, normalise_email
from switchyard.envelope import Envelope
from switchyard.mongo import Index, loaded_time, stored_time
from switchyard.mongo.client import Document, asc
from switchyard.outbox import stage_events, with_events

log = logging.getLogger("auth.users")

USERS = "users"
INDEXES = [
    Index(USERS, asc("email"), unique=True),
    Index(USERS, asc("email_key"), unique=True, sparse=True),
    # No index on "roles": on the embedded store, find() through an index on an array
    # field misses documents that count_documents() sees.
]
# Times, stored with switchyard.mongo.dates under the name of the moment they record.
_TIMES = {
    "created_at": "created",
    "updated_at": "updated",
    "verified_at": "verified",
    "deleted_at": "deleted",
    "sessions_revoked_at": "sessions_revoked",
}


def _stored(moment: datetime | None) -> Document | None:
    return stored_time(moment) if moment is not None else None


def _loaded(value: Mapping[str, Any] | None) -> datetime | None:
    return loaded_time(value) if value else None


def user_document(user: User) -> Document:
    """The stored shape of an account (its outbox is added by the insert)."""
    document: Document = {
        "_id": user.id,
        "email": user.email,
        "email_key": email_key(user.email),
        "display_name": user.display_name,
        "roles": list(user.roles),
        "status": user.status.value,
        "version": user.version,
        "created": stored_time(user.created_at),
        "updated": stored_time(user.updated_at),
        "verified": _stored(user.verified_at),
        "sessions_revoked": _stored(user.sessions_revoked_at),
    }
    if user.password_hash is not None:
        document["password_hash"] = user.password_hash
    if user.signup_contested:
        document["signup_contested"] = True
    return document


def stored_user(document: Mapping[str, Any]) -> User:
    created = loaded_time(document["created"])
    return User(
        id=document["_id"],
        email=document["email"],
        display_name=document.get("display_name", ""),
        roles=tuple(document.get("roles", ())),
        status=UserStatus(document["status"]),
        password_hash=document.get("password_hash"),
        created_at=created,
        updated_at=_loaded(document.get("updated")) or created,
        verified_at=_loaded(document.get("verified")),
        sessions_revoked_at=_loaded(document.get("sessions_revoked")),
        signup_contested=bool(document.get("signup_contested", False)),
        version=int(document.get("version", 0)),
    )


def change_update(change: UserChange) -> Document:
    """The update of ``change``: ``$set`` and ``$unset`` in the stored shape, and a version."""
    fields: Document = {}
    removed: list[str] = []
    if change.status is not None:
        fields["status"] = change.status.value
    if change.email is not None:
        fields["email"] = change.email
        fields["email_key"] = email_key(change.email)
    if change.display_name is not None:
        fields["display_name"] = change.display_name
    if change.roles is not None:
        fields["roles"] = list(change.roles)
    if change.password_hash is not None:
        fields["password_hash"] = change.password_hash
    if change.clear_password:
        removed.append("password_hash")
    if change.signup_contested is True:
        fields["signup_contested"] = True
    elif change.signup_contested is False:
        removed.append("signup_contested")
    for name, stored in _TIMES.items():
        moment = getattr(change, name, None)
        if moment is not None:
            fields[stored] = stored_time(moment)
    update: Document = {"$inc": {"version": 1}}
    if fields:
        update["$set"] = fields
    if removed:
        update["$unset"] = dict.fromkeys(removed, "")
    return update


def _user(document: Mapping[str, Any] | None) -> User | None:
    return stored_user(document) if document else None


class UserRepository:
    """The users collection (implements ``handlers.ports.Users``)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[USERS]

    async def insert(self, user: User, events: Sequence[Envelope]) -> User:
        try:
            await self.collection.insert_one(with_events(user_document(user), events))
        except DuplicateKeyError:
            raise EmailTaken(user.email) from None
        return user

    async def by_email(self, email: str) -> User | None:
        """The account of ``email`` or of any look-alike of it."""
        query = {
            "$or": [
                {"email_key": email_key(email)},
                # Written before addresses had a comparison key, not yet given one.
                {"email": normalise_email(email), "email_key": {"$exists": False}},
            ]
        }
        return _user(await self.collection.find_one(query, {"outbox": 0}))

    async def by_id(self, user_id: str) -> User | None:
        return _user(await self.collection.find_one({"_id": user_id}, {"outbox": 0}))

    async def update(
        self,
        user_id: str,
        change: UserChange,
        *,
        expect_status: UserStatus | None = None,
        expect_password_hash: str | None = None,
        expect_version: int | None = None,
        events: Sequence[Envelope] = (),
    ) -> User | None:
        """One guarded single-document update with its events; None when a guard failed.
        Every update counts a version, so a write guarded on the version it read commits
        exactly the state its events describe."""
        guard: Document = {"_id": user_id}
        if expect_status is not None:
            guard["status"] = expect_status.value
        if expect_password_hash is not None:
            guard["password_hash"] = expect_password_hash
        if expect_version is not None:
            guard["version"] = expect_version
        document = await self.collection.find_one_and_update(
            guard,
            stage_events(change_update(change), events),
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
        return _user(document)

    async def page(
        self, *, limit: int, after: str | None, status: UserStatus | None, role: str | None
    ) -> list[User]:
        query: Document = {}
        if after:
            query["_id"] = {"$gt": after}
        if status:
            query["status"] = status.value
        if role:
            query["roles"] = role
        cursor = self.collection.find(query, {"outbox": 0}).sort("_id", 1).limit(limit)
        return [stored_user(document) async for document in cursor]

    async def any_admin(self) -> bool:
        return await self.collection.find_one({"roles": "admin"}, {"_id": 1}) is not None


async def backfill_email_keys(db: AsyncDatabase[Document]) -> int:
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

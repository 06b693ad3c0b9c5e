"""Writing events into documents, and deleting documents without losing them.

A state change and its events are one single-document write (DESIGN §2): each event
lands in the document's ``outbox`` map under its id; ``outbox_pending`` counts the
events waiting, ``outbox_seq`` every event ever staged on this incarnation of the
document, and ``outbox_epoch`` is a random id set when the document is created. The
epoch is what makes the relay's batched clear safe against a document deleted and
re-created under the same ``_id`` (its ``outbox_seq`` starts at 1 again; its epoch
never matches the old one).

A document that still holds unrelayed events is deleted only through
:func:`delete_documents`, which first moves those events into ``outbox_detached``
(relayed like any outbox collection). Outbox collections carry no TTL index: the
relay sweeps expired documents itself, once their events are out (``Expiry``).

Times are stored times (``switchyard.mongo.dates``): each staged event records when it was
staged (``staged``), and an ``Expiry`` names a stored-time field.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from switchyard.envelope import Envelope, utcnow
from switchyard.mongo.client import Document, Index, asc
from switchyard.mongo.dates import stored_time, time_sort_key

OUTBOX_FIELD = "outbox"
PENDING_FIELD = "outbox_pending"
SEQ_FIELD = "outbox_seq"
EPOCH_FIELD = "outbox_epoch"
DETACHED_COLLECTION = "outbox_detached"
_OUTBOX_PROJECTION = {OUTBOX_FIELD: 1, PENDING_FIELD: 1, SEQ_FIELD: 1, EPOCH_FIELD: 1}
_DELETE_TRIES = 20


def new_epoch() -> str:
    return uuid.uuid4().hex


def stored_event(envelope: Envelope) -> dict[str, Any]:
    # The envelope is kept as its JSON text: one string is cheaper for the store to
    # write and read than a nested document, and it is exactly what gets published.
    return {
        "json": envelope.to_json().decode(),
        "type": envelope.type,
        "staged": stored_time(utcnow()),
    }


def staged_envelope(stored: Mapping[str, Any]) -> Envelope:
    if "json" in stored:
        return Envelope.model_validate_json(stored["json"])
    return Envelope.model_validate(stored["envelope"])  # staged by an earlier version


def with_events(document: Mapping[str, Any], events: Iterable[Envelope]) -> dict[str, Any]:
    """A new document carrying ``events`` in its outbox, for ``insert_one``."""
    staged = {event.id: stored_event(event) for event in events}
    return {
        **document,
        OUTBOX_FIELD: staged,
        PENDING_FIELD: len(staged),
        SEQ_FIELD: len(staged),
        EPOCH_FIELD: new_epoch(),
    }


def stage_events(update: Mapping[str, Any], events: Iterable[Envelope]) -> dict[str, Any]:
    """``update`` plus ``$set`` of each event into the outbox map and ``$inc`` of the counters
    (and, should the update be an upsert that creates the document, its epoch)."""
    merged: dict[str, Any] = {op: dict(fields) for op, fields in update.items()}
    count = 0
    for event in events:
        merged.setdefault("$set", {})[f"{OUTBOX_FIELD}.{event.id}"] = stored_event(event)
        count += 1
    if count:
        inc = merged.setdefault("$inc", {})
        inc[PENDING_FIELD] = inc.get(PENDING_FIELD, 0) + count
        inc[SEQ_FIELD] = inc.get(SEQ_FIELD, 0) + count
        merged.setdefault("$setOnInsert", {})[EPOCH_FIELD] = new_epoch()
    return merged


def incarnation_guard(document: Mapping[str, Any]) -> dict[str, Any]:
    """A filter only this incarnation of ``document``, with exactly the events it held when
    read, still matches (a document of an earlier version has no epoch or seq)."""
    guard: dict[str, Any] = {"_id": document["_id"]}
    for field in (SEQ_FIELD, EPOCH_FIELD):
        guard[field] = document[field] if field in document else {"$exists": False}
    return guard


@dataclass(frozen=True)
class Expiry:
    """Documents of ``collection`` whose ``field`` (a stored time, ``stored_time``) is more
    than ``after_seconds`` in the past are deleted by the relay — once their events are
    published."""

    collection: str
    field: str
    after_seconds: float = 0.0


def outbox_indexes(collections: Sequence[str], expiry: Sequence[Expiry] = ()) -> list[Index]:
    """Indexes the relay needs: pending counters, the detached events, expiry sweeps."""
    names = [*collections, DETACHED_COLLECTION]
    return [Index(name, asc(PENDING_FIELD)) for name in names] + [
        Index(rule.collection, asc(time_sort_key(rule.field))) for rule in expiry
    ]


async def delete_documents(collection: AsyncCollection[Document], query: Mapping[str, Any]) -> int:
    """Delete the documents matching ``query``; returns how many this call deleted.

    Events a document still holds are first copied into ``outbox_detached`` (keyed by
    event id, so a repeated move is one copy), then the document is deleted with a
    guard on its incarnation and ``outbox_seq``: an event staged meanwhile makes the
    delete miss, and the document is read and moved again. A crash between the move
    and the delete publishes the moved events twice at worst (consumers de-duplicate).
    """
    detached = collection.database[DETACHED_COLLECTION]
    ids = [doc["_id"] async for doc in collection.find(query, {"_id": 1})]
    deleted = 0
    for doc_id in ids:
        for _ in range(_DELETE_TRIES):
            document = await collection.find_one({**query, "_id": doc_id}, _OUTBOX_PROJECTION)
            if document is None:
                break  # gone already, or no longer matches the query
            for event_id, stored in (document.get(OUTBOX_FIELD) or {}).items():
                await detached.replace_one(
                    {"_id": event_id},
                    {
                        "_id": event_id,
                        OUTBOX_FIELD: {event_id: stored},
                        PENDING_FIELD: 1,
                        SEQ_FIELD: 1,
                        EPOCH_FIELD: new_epoch(),
                        "from": {"collection": collection.name, "document_id": doc_id},
                    },
                    upsert=True,
                )
            result = await collection.delete_one({**query, **incarnation_guard(document)})
            if result.deleted_count:
                deleted += 1
                break
        else:
            raise RuntimeError(f"could not delete {collection.name}/{doc_id}: events kept arriving")
    return deleted

"""The embedded outbox (DESIGN §2–§3): a state change and its events are one document write.

Writing: a service adds its events to the same single-document update that
changes state — :func:`with_events` for inserts, :func:`stage_events` for
updates. Each event lands in the document's ``outbox`` map under its id;
``outbox_pending`` counts the events waiting and ``outbox_seq`` counts every
event ever staged on the document (it only grows). No multi-document
transaction is needed.

Relaying: :class:`OutboxRelay` finds documents with pending events and
publishes each event with a broker confirm. A document whose events were all
confirmed is cleared in one batched update guarded by the ``outbox_seq`` seen
when it was read — if a writer staged another event meanwhile, the guard fails
and that document falls back to per-event removals, each guarded by
``outbox.<id>`` still existing (so nothing is removed twice or unpublished).
A crash after the confirm and before the removal publishes the event again
later: delivery is at least once and consumers de-duplicate on the event id.
One relay per service holds a lease at a time, so replicas don't race.

On a replica set (or a sharded cluster) the relay reads with ``majority`` read
concern: an event is published only once the write that staged it can no longer be
rolled back by a failover. The embedded server is a standalone, where that read
concern does not apply (:func:`relay_read_concern` decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern

from switchyard import keys
from switchyard.bus.connection import PublishFailed, UnroutableEvent
from switchyard.envelope import Envelope, format_time, utcnow
from switchyard.metrics import Metrics
from switchyard.mongo.client import Document, Index, asc

log = logging.getLogger("switchyard.outbox")

OUTBOX_FIELD = "outbox"
PENDING_FIELD = "outbox_pending"
SEQ_FIELD = "outbox_seq"
LEASES_COLLECTION = "outbox_leases"
UNROUTABLE_COLLECTION = "outbox_unroutable"


class Publisher(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...


def _stored(envelope: Envelope) -> dict[str, Any]:
    # The envelope is kept as its JSON text: one string is cheaper for the store to
    # write and read than a nested document, and it is exactly what gets published.
    return {"json": envelope.to_json().decode(), "type": envelope.type, "staged_at": time.time()}


def _staged_envelope(stored: Mapping[str, Any]) -> Envelope:
    if "json" in stored:
        return Envelope.model_validate_json(stored["json"])
    return Envelope.model_validate(stored["envelope"])  # staged by an earlier version


def with_events(document: Mapping[str, Any], events: Iterable[Envelope]) -> dict[str, Any]:
    """A new document carrying ``events`` in its outbox, for ``insert_one``."""
    staged = {event.id: _stored(event) for event in events}
    return {**document, OUTBOX_FIELD: staged, PENDING_FIELD: len(staged), SEQ_FIELD: len(staged)}


def stage_events(update: Mapping[str, Any], events: Iterable[Envelope]) -> dict[str, Any]:
    """``update`` plus ``$set`` of each event into the outbox map and ``$inc`` of the counter."""
    merged: dict[str, Any] = {op: dict(fields) for op, fields in update.items()}
    count = 0
    for event in events:
        merged.setdefault("$set", {})[f"{OUTBOX_FIELD}.{event.id}"] = _stored(event)
        count += 1
    if count:
        inc = merged.setdefault("$inc", {})
        inc[PENDING_FIELD] = inc.get(PENDING_FIELD, 0) + count
        inc[SEQ_FIELD] = inc.get(SEQ_FIELD, 0) + count
    return merged


def relay_read_concern(hello: Mapping[str, Any]) -> ReadConcern | None:
    """``majority`` when the store can roll back an acknowledged write (a replica-set
    member or a sharded cluster's router), else None (a standalone server)."""
    if hello.get("setName") or hello.get("msg") == "isdbgrid":
        return ReadConcern("majority")
    return None


def outbox_indexes(collections: Sequence[str]) -> list[Index]:
    return [Index(name, asc(PENDING_FIELD)) for name in collections]


class OutboxRelay:
    """Publishes the pending events of ``collections`` and marks them sent."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        collections: Sequence[str],
        publisher: Publisher,
        *,
        metrics: Metrics,
        poll_interval: float = 0.5,
        linger: float = 0.01,
        batch_size: int = 200,
        lease_seconds: float = 10.0,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.collections = list(collections)
        self.publisher = publisher
        self.metrics = metrics
        self.poll_interval = poll_interval
        # After a wake-up, wait this long so a burst of writes is relayed as one batch
        # (one find and one clear instead of one per write).
        self.linger = linger
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.owner = owner or uuid.uuid4().hex
        self.read_concern: ReadConcern | None = None
        self._topology_known = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lease_until = 0.0
        self._last_gauge = 0.0
        # Per collection, from the last pass: (events still pending or None when the pass
        # saw only part of the backlog, staged time of the oldest event it saw).
        self._backlog: dict[str, tuple[int | None, float | None]] = {}

    # -- lifecycle -----------------------------------------------------------------

    def notify(self) -> None:
        """Tell the relay new events were written (it also polls)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(PyMongoError):
            await self.db[LEASES_COLLECTION].delete_one(
                {"_id": self.metrics.service, "owner": self.owner}
            )

    async def run(self) -> None:
        backoff = self.poll_interval
        while True:
            try:
                published = await self.relay_once()
                backoff = self.poll_interval
            except (PublishFailed, PyMongoError) as error:
                log.warning(
                    "outbox relay waiting for the broker or store", extra={"error": repr(error)}
                )
                published = 0
                backoff = min(backoff * 2, 10.0)
            # Anything else is a bug; the relay must outlive it and say so loudly.
            except Exception:  # noqa: BLE001
                log.exception("outbox relay pass failed; retrying")
                published = 0
                backoff = min(backoff * 2, 10.0)
            if published >= self.batch_size:
                continue  # more is waiting
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
                if self.linger:
                    await asyncio.sleep(self.linger)

    # -- one pass ------------------------------------------------------------------

    async def _hold_lease(self) -> bool:
        now = time.time()
        if self._lease_until - now > self.lease_seconds / 2:
            return True
        leases = self.db[LEASES_COLLECTION]
        until = now + self.lease_seconds
        service = self.metrics.service
        result = await leases.update_one(
            {"_id": service, "$or": [{"owner": self.owner}, {"until": {"$lt": now}}]},
            {"$set": {"owner": self.owner, "until": until}},
        )
        if result.matched_count == 0:
            try:
                await leases.insert_one({"_id": service, "owner": self.owner, "until": until})
            except DuplicateKeyError:
                self._lease_until = 0.0
                return False
        self._lease_until = until
        return True

    async def relay_once(self) -> int:
        """Publish what is pending now; returns how many events were published."""
        if not await self._hold_lease():
            return 0
        if not self._topology_known:
            self.read_concern = relay_read_concern(await self.db.client.admin.command("hello"))
            self._topology_known = True
        total = 0
        for name in self.collections:
            total += await self._relay_collection(name)
        await self._update_gauges()
        return total

    async def _relay_collection(self, name: str) -> int:
        collection = self.db[name]
        source = collection.with_options(read_concern=self.read_concern)
        cursor = source.find(
            {PENDING_FIELD: {"$gt": 0}}, {OUTBOX_FIELD: 1, SEQ_FIELD: 1}, limit=self.batch_size
        )
        documents = await cursor.to_list()
        if not documents:
            self._backlog[name] = (0, None)
            return 0
        pending: list[tuple[Any, str, Envelope]] = []
        staged_at: dict[str, float] = {}
        unreadable: list[tuple[Any, str, Any, str]] = []
        for document in documents:
            for event_id, stored in (document.get(OUTBOX_FIELD) or {}).items():
                try:
                    pending.append((document["_id"], event_id, _staged_envelope(stored)))
                except (ValidationError, KeyError, TypeError) as error:
                    unreadable.append((document["_id"], event_id, stored, repr(error)[:500]))
                    continue
                staged_at[event_id] = float(stored.get("staged_at", time.time()))
        if unreadable:
            await self._set_aside_unreadable(collection, name, unreadable)
        pending.sort(key=lambda item: (item[2].time, item[1]))

        results = await asyncio.gather(
            *(self.publisher.publish(envelope) for _, _, envelope in pending),
            return_exceptions=True,
        )
        sent: dict[Any, list[str]] = {}
        unsent: set[Any] = set()
        unroutable: list[Document] = []
        failure: BaseException | None = None
        for (doc_id, event_id, envelope), result in zip(pending, results, strict=True):
            if isinstance(result, UnroutableEvent):
                unroutable.append(
                    {
                        "_id": event_id,
                        "reason": "unroutable",
                        "collection": name,
                        "document_id": doc_id,
                        "envelope": envelope.model_dump(mode="json", exclude_none=True),
                        "returned_at": format_time(utcnow()),
                    }
                )
            elif isinstance(result, BaseException):
                failure = result
                unsent.add(doc_id)
                continue
            sent.setdefault(doc_id, []).append(event_id)
        for record in unroutable:
            # Kept for inspection: counted and logged by the bus, never silently dropped.
            await self.db[UNROUTABLE_COLLECTION].replace_one(
                {"_id": record["_id"]}, record, upsert=True
            )
        await self._mark_sent(collection, documents, sent, unsent)
        left = [staged_at[e] for doc_id, e, _ in pending if doc_id in unsent]
        if len(documents) < self.batch_size:  # the pass saw the whole backlog
            self._backlog[name] = (len(left), min(left, default=None))
        else:
            self._backlog[name] = (None, min(staged_at.values()))
        if failure is not None:
            if isinstance(failure, PublishFailed | PyMongoError):
                raise failure
            raise PublishFailed(repr(failure)) from failure
        return sum(len(ids) for ids in sent.values())

    async def _set_aside_unreadable(
        self, collection: Any, name: str, entries: list[tuple[Any, str, Any, str]]
    ) -> None:
        """Staged entries that are not envelopes can never be published: keep them, with
        the reason, in ``outbox_unroutable`` and take them out of the outbox."""
        for doc_id, event_id, stored, reason in entries:
            log.error(
                "unreadable outbox entry set aside",
                extra={"collection": name, "document_id": str(doc_id), "event_id": event_id},
            )
            await self.db[UNROUTABLE_COLLECTION].replace_one(
                {"_id": event_id},
                {
                    "_id": event_id,
                    "reason": "invalid",
                    "error": reason,
                    "collection": name,
                    "document_id": doc_id,
                    "staged": stored,
                    "returned_at": format_time(utcnow()),
                },
                upsert=True,
            )
            await collection.update_one(
                {"_id": doc_id, f"{OUTBOX_FIELD}.{event_id}": {"$exists": True}},
                {"$unset": {f"{OUTBOX_FIELD}.{event_id}": ""}, "$inc": {PENDING_FIELD: -1}},
            )

    async def _mark_sent(
        self,
        collection: Any,
        documents: list[Document],
        sent: dict[Any, list[str]],
        unsent: set[Any],
    ) -> None:
        """Clear what was confirmed: whole documents in one guarded update per ``outbox_seq``
        value, then per-event guarded removals for the rest."""
        by_seq: dict[int, list[Any]] = {}
        seq_of: dict[Any, int] = {}
        for document in documents:
            doc_id = document["_id"]
            if doc_id in sent and doc_id not in unsent and SEQ_FIELD in document:
                seq_of[doc_id] = int(document[SEQ_FIELD])
                by_seq.setdefault(seq_of[doc_id], []).append(doc_id)
        leftovers = [doc_id for doc_id in sent if doc_id not in seq_of]
        for seq, ids in by_seq.items():
            result = await collection.update_many(
                {"_id": {"$in": ids}, SEQ_FIELD: seq},
                {"$set": {OUTBOX_FIELD: {}, PENDING_FIELD: 0}},
            )
            if result.modified_count != len(ids):
                leftovers.extend(ids)  # someone staged more meanwhile: remove one by one
        operations = [
            UpdateOne(
                {"_id": doc_id, f"{OUTBOX_FIELD}.{event_id}": {"$exists": True}},
                {"$unset": {f"{OUTBOX_FIELD}.{event_id}": ""}, "$inc": {PENDING_FIELD: -1}},
            )
            for doc_id in leftovers
            for event_id in sent[doc_id]
        ]
        if operations:
            await collection.bulk_write(operations, ordered=False)

    async def _update_gauges(self, every: float = 2.0) -> None:
        """Pending events and the oldest one's age, from what the relay's passes saw.

        Only when a pass saw part of a backlog (a full batch) does this ask the store,
        with one aggregation per collection; it never rescans the outbox maps.
        """
        now = time.time()
        if now - self._last_gauge < every:
            return
        self._last_gauge = now
        pending = 0
        oldest: float | None = None
        for name in self.collections:
            count, staged = self._backlog.get(name, (None, None))
            if count is None:
                rows = await (
                    await self.db[name].aggregate(
                        [
                            {"$match": {PENDING_FIELD: {"$gt": 0}}},
                            {"$group": {"_id": None, "n": {"$sum": f"${PENDING_FIELD}"}}},
                        ]
                    )
                ).to_list()
                count = int(rows[0]["n"]) if rows else 0
            pending += count
            if staged is not None and count:
                oldest = staged if oldest is None else min(oldest, staged)
        service = self.metrics.service
        self.metrics.outbox_pending.labels(service).set(pending)
        self.metrics.outbox_oldest_age.labels(service).set(0 if oldest is None else now - oldest)


def outbox_context(collections: Sequence[str]) -> Any:
    """A ``cleanup_ctx`` running the relay for ``collections``.

    Needs the Mongo and bus contexts registered before it.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        relay = OutboxRelay(
            app[keys.MONGO_DB],
            collections,
            app[keys.BUS],
            metrics=app[keys.METRICS],
            poll_interval=settings.outbox_poll_interval,
            linger=settings.outbox_linger,
        )
        app[keys.OUTBOX_RELAY] = relay
        relay.start()
        try:
            yield
        finally:
            await relay.stop()

    return context

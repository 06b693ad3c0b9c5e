"""The outbox relay (DESIGN §2–§3): publishes staged events with a confirm, then clears them.

:class:`OutboxRelay` finds documents with pending events and publishes each event
with a broker confirm. A document whose events were all confirmed is cleared in one
batched update guarded by the ``outbox_seq`` and ``outbox_epoch`` seen when it was
read — if a writer staged another event meanwhile, or the document was deleted and
re-created under the same ``_id``, the guard fails and that document falls back to
per-event removals, each guarded by ``outbox.<id>`` still existing (event ids are
never reused, so nothing is removed twice or unpublished). A crash after the confirm
and before the removal publishes the event again later: delivery is at least once
and consumers de-duplicate on the event id.

One relay per service holds the lease (:mod:`switchyard.outbox.lease`) at a time; it
renews the lease while a pass runs and, the moment a renewal finds it taken over,
cancels the publishes in flight and publishes nothing more of what it read.

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
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern

from switchyard import keys
from switchyard.bus.connection import Bus, PublishFailed, UnroutableEvent
from switchyard.envelope import Envelope, utcnow
from switchyard.leases import kept_alive
from switchyard.metrics import Metrics
from switchyard.mongo.client import Document
from switchyard.mongo.dates import loaded_time, stored_time, time_range
from switchyard.outbox.lease import LEASES_COLLECTION, LeaseLost, RelayLease
from switchyard.outbox.staging import (
    DETACHED_COLLECTION,
    EPOCH_FIELD,
    OUTBOX_FIELD,
    PENDING_FIELD,
    SEQ_FIELD,
    Expiry,
    staged_envelope,
)
from switchyard.outbox.unroutable import UNROUTABLE_COLLECTION, UnroutableEvents

log = logging.getLogger("switchyard.outbox")

SIDE_WORK_INTERVAL = 1.0  # seconds between looks at outbox_detached and outbox_unroutable


class Publisher(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...


def relay_read_concern(hello: Mapping[str, Any]) -> ReadConcern | None:
    """``majority`` when the store can roll back an acknowledged write (a replica-set
    member or a sharded cluster's router), else None (a standalone server)."""
    if hello.get("setName") or hello.get("msg") == "isdbgrid":
        return ReadConcern("majority")
    return None


async def refuse_ttl_indexes(db: AsyncDatabase[Document], collections: Sequence[str]) -> None:
    """Outbox collections must not expire documents by TTL: a TTL index deletes a document
    whatever events still wait in it (use :class:`Expiry`, swept by the relay)."""
    for name in collections:
        async for index in await db[name].list_indexes():
            if "expireAfterSeconds" in index:
                raise RuntimeError(
                    f"collection {name!r} carries an outbox and has the TTL index"
                    f" {index['name']!r}: it would delete events before they are published."
                    " Declare the index without expire_after_seconds and give the relay an"
                    " Expiry rule instead."
                )


class OutboxRelay:
    """Publishes the pending events of ``collections`` (and of ``outbox_detached``),
    re-tries events nobody was bound for yet, and sweeps expired documents."""

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
        expiry: Sequence[Expiry] = (),
        expiry_interval: float = 30.0,
        unroutable_window: float = 3600.0,
        unroutable_retry_max: float = 30.0,
        parking: Bus | None = None,
    ) -> None:
        self.db = db
        self.collections = [*collections, DETACHED_COLLECTION]
        self.publisher = publisher
        self.metrics = metrics
        self.poll_interval = poll_interval
        # After a wake-up, wait this long so a burst of writes is relayed as one batch
        # (one find and one clear instead of one per write).
        self.linger = linger
        self.batch_size = batch_size
        self.lease = RelayLease(
            db[LEASES_COLLECTION], metrics.service, owner or uuid.uuid4().hex, lease_seconds
        )
        self.expiry = list(expiry)
        self.expiry_interval = expiry_interval
        self.unroutable = UnroutableEvents(
            db,
            window=unroutable_window,
            retry_max=unroutable_retry_max,
            parking=parking if parking is not None else _bus_of(publisher),
            batch_size=batch_size,
        )
        self.read_concern: ReadConcern | None = None
        self._topology_known = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._last_gauge = 0.0
        self._last_sweep = 0.0
        self._last_side_pass = 0.0
        # Per collection, from the last pass: (events still pending or None when the pass
        # saw only part of the backlog, staged time of the oldest event it saw).
        self._backlog: dict[str, tuple[int | None, float | None]] = {}

    # -- lifecycle -----------------------------------------------------------------

    def notify(self) -> None:
        """Tell the relay new events were written (it also polls)."""
        self._wake.set()

    async def declare(self) -> None:
        """Broker topology the relay needs (the parking DLQ of unroutable events)."""
        await self.unroutable.declare()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        # Cancel until it is done: on Python 3.11 a cancellation that lands as a wait
        # ends can be swallowed (asyncio.wait_for), and one cancel would then hang here.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("the outbox relay had stopped with an error", exc_info=task.exception())
        with contextlib.suppress(PyMongoError):
            await self.lease.release()

    async def run(self) -> None:
        backoff = self.poll_interval
        while True:
            try:
                published = await self.relay_once()
                if self.lease.fence and time.time() - self._last_sweep >= self.expiry_interval:
                    await self.sweep_expired()
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
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
                if self.linger:
                    await asyncio.sleep(self.linger)

    # -- one pass ------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish what is pending now; returns how many events were published."""
        if not await self.lease.acquire():
            return 0
        tenure = self.lease.fence
        if not self._topology_known:
            self.read_concern = relay_read_concern(await self.db.client.admin.command("hello"))
            self._topology_known = True
        total = 0
        async with kept_alive(
            self.lease.renew,
            every=self.lease.seconds / 3,
            what="outbox relay",
            on_lost=self._cancel_inflight,
            valid_until=lambda: self.lease.until,
        ):
            # The side work (events moved aside by deletes, events nobody was bound for)
            # is rare: looked at once a second, not on every pass of a busy relay.
            side_work = time.time() - self._last_side_pass >= SIDE_WORK_INTERVAL
            if side_work:
                self._last_side_pass = time.time()
            for name in self.collections:
                if not self.lease.holds(tenure):
                    break
                if name == DETACHED_COLLECTION and not side_work:
                    continue
                total += await self._relay_collection(name, tenure)
            if side_work and self.lease.holds(tenure):
                total += await self.unroutable.retry_due(
                    lambda envelope: self._publish_fenced(envelope, tenure),
                    may_continue=lambda: self.lease.holds(tenure),
                )
        if not self.lease.holds(tenure):
            log.warning("the outbox relay lease was lost mid-pass; stopped publishing")
        await self._update_gauges()
        return total

    def _cancel_inflight(self) -> None:
        for task in self._inflight:
            task.cancel()

    async def _publish_fenced(self, envelope: Envelope, tenure: int) -> None:
        if not self.lease.holds(tenure):
            raise LeaseLost()
        task = asyncio.ensure_future(self.publisher.publish(envelope))
        self._inflight.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if task.cancelled() and not self.lease.holds(tenure):
                raise LeaseLost() from None
            raise
        finally:
            self._inflight.discard(task)

    async def _relay_collection(self, name: str, tenure: int) -> int:
        collection = self.db[name]
        source = collection.with_options(read_concern=self.read_concern)
        cursor = source.find(
            {PENDING_FIELD: {"$gt": 0}},
            {OUTBOX_FIELD: 1, SEQ_FIELD: 1, EPOCH_FIELD: 1},
            limit=self.batch_size,
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
                    pending.append((document["_id"], event_id, staged_envelope(stored)))
                except (ValidationError, KeyError, TypeError) as error:
                    unreadable.append((document["_id"], event_id, stored, repr(error)[:500]))
                    continue
                staged = stored.get("staged")
                staged_at[event_id] = loaded_time(staged).timestamp() if staged else time.time()
        if unreadable:
            await self._set_aside_unreadable(collection, name, unreadable)
        pending.sort(key=lambda item: (item[2].time, item[1]))

        results = await asyncio.gather(
            *(self._publish_fenced(envelope, tenure) for _, _, envelope in pending),
            return_exceptions=True,
        )
        sent: dict[Any, list[str]] = {}
        unsent: set[Any] = set()
        failure: BaseException | None = None
        for (doc_id, event_id, envelope), result in zip(pending, results, strict=True):
            if isinstance(result, UnroutableEvent):
                # Kept aside and re-tried: nobody may be bound for it *yet*.
                await self.unroutable.keep(name, doc_id, envelope)
            elif isinstance(result, LeaseLost):
                unsent.add(doc_id)
                continue
            elif isinstance(result, BaseException):
                failure = result
                unsent.add(doc_id)
                continue
            sent.setdefault(doc_id, []).append(event_id)
        await self._mark_sent(collection, documents, sent, unsent)
        if name == DETACHED_COLLECTION and sent:
            await collection.delete_many({"_id": {"$in": list(sent)}, PENDING_FIELD: 0})
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
        self,
        collection: AsyncCollection[Document],
        name: str,
        entries: list[tuple[Any, str, Any, str]],
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
                    "returned": stored_time(utcnow()),
                },
                upsert=True,
            )
            await collection.update_one(
                {"_id": doc_id, f"{OUTBOX_FIELD}.{event_id}": {"$exists": True}},
                {"$unset": {f"{OUTBOX_FIELD}.{event_id}": ""}, "$inc": {PENDING_FIELD: -1}},
            )

    async def _mark_sent(
        self,
        collection: AsyncCollection[Document],
        documents: list[Document],
        sent: dict[Any, list[str]],
        unsent: set[Any],
    ) -> None:
        """Clear what was confirmed: whole documents in one update per ``outbox_seq`` value,
        guarded by each document's epoch too, then per-event guarded removals for the rest."""
        by_seq: dict[int, list[Document]] = {}
        for document in documents:
            doc_id = document["_id"]
            if doc_id in sent and doc_id not in unsent and EPOCH_FIELD in document:
                by_seq.setdefault(int(document[SEQ_FIELD]), []).append(document)
        batched = {document["_id"] for group in by_seq.values() for document in group}
        leftovers = [doc_id for doc_id in sent if doc_id not in batched]
        for seq, group in by_seq.items():
            ids = [document["_id"] for document in group]
            result = await collection.update_many(
                {
                    "_id": {"$in": ids},
                    SEQ_FIELD: seq,
                    EPOCH_FIELD: {"$in": [document[EPOCH_FIELD] for document in group]},
                },
                {"$set": {OUTBOX_FIELD: {}, PENDING_FIELD: 0}},
            )
            if result.modified_count != len(ids):
                # Someone staged more meanwhile, or re-created a document: one by one.
                leftovers.extend(ids)
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

    async def sweep_expired(self) -> int:
        """Delete documents past their :class:`Expiry` whose events were all published."""
        self._last_sweep = time.time()
        deleted = 0
        for rule in self.expiry:
            cutoff = utcnow() - timedelta(seconds=rule.after_seconds)
            result = await self.db[rule.collection].delete_many(
                {  # $and around the $or: see the store contract tests
                    "$and": [
                        time_range(rule.field, before=cutoff),
                        {"$or": [{PENDING_FIELD: 0}, {PENDING_FIELD: {"$exists": False}}]},
                    ]
                }
            )
            deleted += result.deleted_count
        return deleted

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


def _bus_of(publisher: Publisher) -> Bus | None:
    return publisher if isinstance(publisher, Bus) else None


def outbox_context(collections: Sequence[str], *, expiry: Sequence[Expiry] = ()) -> Any:
    """A ``cleanup_ctx`` running the relay for ``collections``.

    Needs the Mongo and bus contexts registered before it. Refuses to start when an
    outbox collection has a TTL index (see :func:`refuse_ttl_indexes`).
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        db = app[keys.MONGO_DB]
        await refuse_ttl_indexes(db, [*collections, DETACHED_COLLECTION])
        relay = OutboxRelay(
            db,
            collections,
            app[keys.BUS],
            metrics=app[keys.METRICS],
            poll_interval=settings.outbox_poll_interval,
            linger=settings.outbox_linger,
            expiry=expiry,
            unroutable_window=settings.outbox_unroutable_window,
            unroutable_retry_max=settings.outbox_unroutable_retry_max,
        )
        await relay.declare()
        app[keys.OUTBOX_RELAY] = relay
        relay.start()
        try:
            yield
        finally:
            await relay.stop()

    return context

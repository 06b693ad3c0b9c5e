"""Events the broker returned because no queue was bound for their type — yet.

On a fresh deploy a publisher may start before the consumers that declare the
queues (auth before notification: the sign-up code would be lost). Such an event
is moved out of its document into ``outbox_unroutable`` and published again with a
growing pause (up to ``retry_max`` seconds) until a queue takes it. Past ``window``
seconds (default one hour) it is parked in the DLQ ``<service>.unroutable.dlq``
with the usual reason headers and ``x-original-exchange``, where ``switchyard-dlq``
lists it and ``replay`` routes it through the exchange again.

Only the routing to *no* queue is re-tried: a consumer queue created after an event
was routed to others does not receive that event (a subscription starts when its
queue is first declared).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from switchyard.bus.connection import Bus, UnroutableEvent
from switchyard.bus.headers import (
    H_ATTEMPTS,
    H_EXC_MESSAGE,
    H_EXC_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    H_REASON,
)
from switchyard.bus.topology import dlq_name, queue_arguments
from switchyard.envelope import Envelope, format_time, utcnow
from switchyard.mongo.client import Document
from switchyard.mongo.dates import loaded_time, stored_time, time_range
from switchyard.outbox.lease import LeaseLost

log = logging.getLogger("switchyard.outbox")

UNROUTABLE_COLLECTION = "outbox_unroutable"
PARKING_HANDLER = "unroutable"  # parked in <prefix><service>.unroutable.dlq
FIRST_PAUSE = 0.5

Publish = Callable[[Envelope], Awaitable[None]]


class UnroutableEvents:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        window: float,
        retry_max: float,
        parking: Bus | None,
        batch_size: int = 200,
    ) -> None:
        self.collection = db[UNROUTABLE_COLLECTION]
        self.window = window
        self.retry_max = retry_max
        self.parking = parking
        self.batch_size = batch_size
        self._declared = False

    def _pause(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.retry_max, FIRST_PAUSE * 2 ** max(0, attempts - 1)))

    async def keep(self, collection: str, document_id: Any, envelope: Envelope) -> None:
        """Set aside an event the broker just returned (it is taken out of its document)."""
        now = utcnow()
        await self.collection.update_one(
            {"_id": envelope.id},
            {
                "$setOnInsert": {"first_returned": stored_time(now)},
                "$set": {
                    "reason": "unroutable",
                    "collection": collection,
                    "document_id": document_id,
                    "envelope": envelope.model_dump(mode="json", exclude_none=True),
                    "returned": stored_time(now),
                    "next_attempt": stored_time(now + self._pause(1)),
                },
                "$inc": {"attempts": 1},
            },
            upsert=True,
        )

    async def declare(self) -> None:
        """The parking DLQ (idempotent; also done before the first park)."""
        if self.parking is None:
            return
        channel = self.parking.channel
        await channel.declare_queue(
            self.parking_queue,
            durable=True,
            arguments=queue_arguments(self.parking.queue_expires_ms, self.parking.queue_type),
        )
        self._declared = True

    @property
    def parking_queue(self) -> str:
        if self.parking is None:
            raise RuntimeError("no bus to park unroutable events on")
        return dlq_name(self.parking.queue_name(PARKING_HANDLER))

    async def retry_due(self, publish: Publish, *, may_continue: Callable[[], bool]) -> int:
        """Publish the set-aside events whose pause is over; returns how many went out."""
        due = self.collection.find(
            {"reason": "unroutable", **time_range("next_attempt", at_or_before=utcnow())},
            limit=self.batch_size,
        )
        delivered = 0
        for record in await due.to_list():
            if not may_continue():
                break
            delivered += await self._retry(record, publish)
        return delivered

    async def _retry(self, record: Mapping[str, Any], publish: Publish) -> int:
        envelope = Envelope.model_validate(record["envelope"])
        attempts = int(record.get("attempts", 1))
        guard = {"_id": record["_id"], "attempts": record.get("attempts", {"$exists": False})}
        try:
            await publish(envelope)
        except LeaseLost:
            return 0  # the next lease holder re-tries it
        except UnroutableEvent:
            now = utcnow()
            first = loaded_time(record["first_returned"])
            if (now - first).total_seconds() >= self.window and self.parking is not None:
                await self._park(envelope, attempts + 1, first, now)
                await self.collection.delete_one(guard)
                return 0
            await self.collection.update_one(
                guard,
                {
                    "$set": {"next_attempt": stored_time(now + self._pause(attempts + 1))},
                    "$inc": {"attempts": 1},
                },
            )
            return 0
        await self.collection.delete_one({"_id": record["_id"]})
        log.info(
            "a set-aside event found its queue",
            extra={"event_id": envelope.id, "event_type": envelope.type, "attempts": attempts},
        )
        return 1

    async def _park(
        self, envelope: Envelope, attempts: int, first: datetime, now: datetime
    ) -> None:
        bus = self.parking
        assert bus is not None
        if not self._declared:
            await self.declare()
        headers = {
            **envelope.headers(),
            H_REASON: "unroutable",
            H_EXC_TYPE: UnroutableEvent.__name__,
            H_EXC_MESSAGE: f"no queue was bound for {envelope.type} within {self.window:.0f}s",
            H_ATTEMPTS: attempts,
            H_FIRST_FAILURE: format_time(first),
            H_LAST_FAILURE: format_time(now),
            H_ORIGINAL_ROUTING_KEY: envelope.type,
            H_ORIGINAL_EXCHANGE: bus.exchange_name,
        }
        await bus.send_to_queue(
            self.parking_queue,
            envelope.to_json(),
            headers=headers,
            properties={
                "content_type": "application/cloudevents+json",
                "message_id": envelope.id,
                "correlation_id": envelope.correlationid,
                "type": envelope.type,
                "app_id": bus.service,
                "timestamp": envelope.time,
            },
        )
        log.error(
            "event parked: no queue was bound for it within the window",
            extra={
                "event_id": envelope.id,
                "event_type": envelope.type,
                "queue": self.parking_queue,
            },
        )

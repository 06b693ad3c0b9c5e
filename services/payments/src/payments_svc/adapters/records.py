"""Business records that move money (offers, deposits, withdrawals, adjustments) and the
one way they change: a *transition*.

A transition is claimed on the record with one guarded update (``status`` is the state it
leaves and ``moving`` is empty — so of two concurrent accepts, or an accept and a cancel,
exactly one claims the record); its transfers run on the ledger; then one guarded update
(``moving`` is still this transition) sets the new status and stages its event in the
record's outbox. A crash anywhere leaves ``moving`` set: the sweeper drives the stored
transition again, and since every transfer is idempotent and the finish is guarded, the
money moves once and the event is staged once.

When the *first* transfer of a transition is refused (the customer's wallet was short),
the transition ends in its ``refused_status`` instead and nothing moved; a later transfer
is never refused by construction (it spends money the first one put aside), so a refusal
there is a ledger bug and stops the record for an operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from payments_svc.adapters.ledger import Ledger, LedgerError
from payments_svc.domain.accounts import TransferSpec
from switchyard.envelope import Envelope, utcnow
from switchyard.mongo import Index, stored_time
from switchyard.mongo.client import Document, asc
from switchyard.mongo.dates import loaded_time, time_range, time_sort_key
from switchyard.outbox import stage_events, with_events

log = logging.getLogger("payments.records")

MOVING_SINCE = "moving_since"


@dataclass(frozen=True)
class Transition:
    label: str
    from_status: str
    to_status: str
    transfers: Sequence[TransferSpec] = ()
    refused_status: str | None = None
    at: datetime = field(default_factory=utcnow)
    actor: str | None = None
    reason: str | None = None
    # Fields set (and counters incremented) on the record when the transition ends.
    on_success: Mapping[str, Any] = field(default_factory=dict)
    on_success_inc: Mapping[str, int] = field(default_factory=dict)
    on_refused: Mapping[str, Any] = field(default_factory=dict)
    on_refused_inc: Mapping[str, int] = field(default_factory=dict)

    def to_document(self) -> Document:
        return {
            "label": self.label,
            "from": self.from_status,
            "to": self.to_status,
            "refused": self.refused_status,
            "transfers": [spec.to_document() for spec in self.transfers],
            "at": stored_time(self.at),
            "actor": self.actor,
            "reason": self.reason,
            "on_success": dict(self.on_success),
            "on_success_inc": dict(self.on_success_inc),
            "on_refused": dict(self.on_refused),
            "on_refused_inc": dict(self.on_refused_inc),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Transition:
        return cls(
            label=doc["label"],
            from_status=doc["from"],
            to_status=doc["to"],
            refused_status=doc.get("refused"),
            transfers=[TransferSpec.from_document(t) for t in doc.get("transfers") or []],
            at=loaded_time(doc["at"]),
            actor=doc.get("actor"),
            reason=doc.get("reason"),
            on_success=doc.get("on_success") or {},
            on_success_inc=doc.get("on_success_inc") or {},
            on_refused=doc.get("on_refused") or {},
            on_refused_inc=doc.get("on_refused_inc") or {},
        )


# Builds the events of a finished transition from the record as it now is.
EventBuilder = Callable[[Document, Transition, bool], list[Envelope]]


def record_indexes(collection: str) -> list[Index]:
    return [Index(collection, asc(time_sort_key(MOVING_SINCE)))]


def _claim_fields(transition: Transition) -> Document:
    return {
        "moving": transition.label,
        MOVING_SINCE: stored_time(utcnow()),
        "transition": transition.to_document(),
    }


class Records:
    """One collection of records and the transitions between their states."""

    def __init__(
        self,
        collection: AsyncCollection[Document],
        ledger: Ledger,
        events: EventBuilder,
    ) -> None:
        self.collection = collection
        self.ledger = ledger
        self.events = events

    async def get(self, record_id: str) -> Document | None:
        return await self.collection.find_one({"_id": record_id})

    async def insert_moving(self, record: Mapping[str, Any], transition: Transition) -> Document:
        """A new record already claimed by its first transition (status = ``from_status``)."""
        document = {
            **record,
            "status": transition.from_status,
            "created": stored_time(transition.at),
            "updated": stored_time(utcnow()),
            **_claim_fields(transition),
        }
        return await self._insert(document)

    async def insert_pending(self, record: Mapping[str, Any], status: str) -> Document:
        """A new record that waits for something outside (a provider's webhook)."""
        document = {
            **record,
            "status": status,
            "moving": "",
            "created": stored_time(utcnow()),
            "updated": stored_time(utcnow()),
        }
        return await self._insert(document)

    async def _insert(self, document: Document) -> Document:
        """Insert the record; when its id exists (an earlier attempt under the same
        Idempotency-Key wrote it first) the stored record is the answer."""
        try:
            await self.collection.insert_one(with_events(document, []))
        except DuplicateKeyError:
            stored = await self.get(document["_id"])
            if stored is None:
                raise
            return stored
        return document

    async def claim(
        self, record_id: str, transition: Transition, *, guard: Mapping[str, Any] | None = None
    ) -> Document | None:
        """Start ``transition`` unless the record moved on (None: re-read and decide)."""
        return await self.collection.find_one_and_update(
            {**(guard or {}), "_id": record_id, "status": transition.from_status, "moving": ""},
            {"$set": _claim_fields(transition)},
            return_document=True,
        )

    async def drive(self, record: Mapping[str, Any]) -> Document:
        """Run the record's claimed transition to its end; returns the record after it."""
        stored = record.get("transition")
        if not record.get("moving") or not stored:
            return dict(record)
        transition = Transition.from_document(stored)
        succeeded = True
        if transition.refused_status is None:
            # Nothing may be refused: the legs spend money already set aside, so they run
            # side by side (an accept's fee and escrow, a completion's fee and payout).
            results = await asyncio.gather(*(self.ledger.execute(t) for t in transition.transfers))
        else:
            results = []
            for spec in transition.transfers:
                results.append(await self.ledger.execute(spec))
                if results[-1].state != "posted":
                    break
        for position, result in enumerate(results):
            if result.state == "posted":
                continue
            if position == 0 and transition.refused_status is not None:
                succeeded = False
                break
            raise LedgerError(
                f"transfer {result.id} of {self.collection.name}/{record['_id']} "
                f"({transition.label}) was refused; the record needs an operator"
            )
        return await self._finish(record, transition, succeeded)

    async def _finish(
        self, record: Mapping[str, Any], transition: Transition, succeeded: bool
    ) -> Document:
        status = transition.to_status if succeeded else transition.refused_status
        fields = dict(transition.on_success if succeeded else transition.on_refused)
        counters = dict(transition.on_success_inc if succeeded else transition.on_refused_inc)
        step = {"status": status, "actor": transition.actor, "at": stored_time(transition.at)}
        updated = stored_time(utcnow())
        after: Document = {
            **record,
            **fields,
            "status": status,
            "moving": "",
            "updated": updated,
            "history": {**(record.get("history") or {}), transition.label: step},
        }
        for name, change in counters.items():
            after[name] = int(record.get(name) or 0) + change
        for gone in ("transition", MOVING_SINCE):
            after.pop(gone, None)
        update: Document = {
            "$set": {
                **fields,
                "status": status,
                "moving": "",
                "updated": updated,
                f"history.{transition.label}": step,
            },
            "$unset": {"transition": "", MOVING_SINCE: ""},
        }
        if counters:
            update["$inc"] = counters
        events = self.events(after, transition, succeeded)
        result = await self.collection.update_one(
            {"_id": record["_id"], "moving": transition.label}, stage_events(update, events)
        )
        if result.modified_count == 1:
            return after  # what the update wrote (outbox fields aside)
        # Another executor finished it first: what it wrote is the answer.
        current = await self.collection.find_one({"_id": record["_id"]})
        return current if current is not None else after

    async def stale(self, *, after: float, limit: int = 100) -> list[Document]:
        cutoff = utcnow() - timedelta(seconds=after)
        return await self.collection.find(
            time_range(MOVING_SINCE, before=cutoff), limit=limit
        ).to_list()

    async def sweep(self, *, after: float) -> int:
        """Drive every transition left running longer than ``after`` seconds."""
        driven = 0
        for record in await self.stale(after=after):
            try:
                await self.drive(record)
                driven += 1
            except LedgerError:
                log.exception("a record's transition cannot finish", extra={"id": record["_id"]})
        return driven

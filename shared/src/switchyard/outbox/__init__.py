"""The embedded outbox (DESIGN §2–§3): a state change and its events are one document write.

Writing (:mod:`switchyard.outbox.staging`): :func:`with_events` for inserts,
:func:`stage_events` for updates, :func:`delete_documents` to delete documents that
may still hold events, :class:`Expiry` instead of TTL indexes.

Relaying (:mod:`switchyard.outbox.relay`): :class:`OutboxRelay` publishes with
confirms under a fenced lease (:mod:`switchyard.outbox.lease`), clears what was
confirmed, and re-tries events no queue was bound for yet
(:mod:`switchyard.outbox.unroutable`).
"""

from switchyard.outbox.lease import LEASES_COLLECTION, LeaseLost, RelayLease
from switchyard.outbox.relay import (
    OutboxRelay,
    Publisher,
    outbox_context,
    refuse_ttl_indexes,
    relay_read_concern,
)
from switchyard.outbox.staging import (
    DETACHED_COLLECTION,
    EPOCH_FIELD,
    OUTBOX_FIELD,
    PENDING_FIELD,
    SEQ_FIELD,
    Expiry,
    delete_documents,
    outbox_indexes,
    stage_events,
    with_events,
)
from switchyard.outbox.unroutable import UNROUTABLE_COLLECTION, UnroutableEvents

__all__ = [
    "DETACHED_COLLECTION",
    "EPOCH_FIELD",
    "LEASES_COLLECTION",
    "OUTBOX_FIELD",
    "PENDING_FIELD",
    "SEQ_FIELD",
    "UNROUTABLE_COLLECTION",
    "Expiry",
    "LeaseLost",
    "OutboxRelay",
    "Publisher",
    "RelayLease",
    "UnroutableEvents",
    "delete_documents",
    "outbox_context",
    "outbox_indexes",
    "refuse_ttl_indexes",
    "relay_read_concern",
    "stage_events",
    "with_events",
]

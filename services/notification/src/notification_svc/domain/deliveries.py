"""Delivery records: one per (event, channel, recipient), with a small state machine.

::

    pending ──claim──▶ sending ──accepted──▶ sent
       ▲                  │ ──rejected (5xx)──▶ failed
       └──── deferred ────┘   (4xx, connection errors: the bus retries the event)

    suppressed: decided without sending (preferences, deleted user)

Only the consumer that moved a record from ``pending`` to ``sending`` (a guarded
single-document update) may send; its claim carries a lease so a crashed
consumer's record can be taken over. ``sent``, ``failed`` and ``suppressed``
are final: a redelivered event finds them and sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from notification_svc.domain.preferences import Category, Channel

DeliveryStatus = Literal["pending", "sending", "sent", "failed", "suppressed"]
FINAL_STATUSES: frozenset[DeliveryStatus] = frozenset({"sent", "failed", "suppressed"})
# What a recipient looks like once its owner's account was deleted.
ERASED_RECIPIENT = "[erased]"


class DeliveryRejected(Exception):
    """The provider refused the message for good (5xx, invalid address): do not retry."""

    def __init__(self, response: str) -> None:
        super().__init__(response)
        self.response = response


class DeliveryDeferred(Exception):
    """The provider could not take the message now (4xx, connection trouble): retry later."""

    def __init__(self, response: str) -> None:
        super().__init__(response)
        self.response = response


class DeliveryInProgress(Exception):
    """Another consumer holds this delivery's claim; the event is retried and finds the outcome."""


@dataclass(frozen=True)
class NewDelivery:
    event_id: str
    event_type: str
    channel: Channel
    recipient: str
    user_id: str
    template: str
    category: Category


@dataclass(frozen=True, kw_only=True)
class Delivery(NewDelivery):
    id: str
    status: DeliveryStatus
    attempts: int
    provider_response: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

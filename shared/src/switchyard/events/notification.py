"""Events the notification service publishes (through its outbox)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from switchyard.envelope import event_type, examples


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@event_type("notification.webhook.disabled")
class WebhookDisabled(_Data):
    """An outgoing webhook subscription was disabled (its endpoint answered 410, or
    kept failing for 24 h); its owner is told by email."""

    model_config = examples(
        {
            "subscription_id": "wh_019c3a82b7c84d2e9f1a0b2c3d4e5f60",
            "owner_id": "019c3a7e5b2f4d1e8a6b0c9d2e4f6a8b",
            "url": "https://hooks.example.com/switchyard",
            "reason": "gone",
            "disabled_at": "2026-03-03T06:00:00Z",
        }
    )

    subscription_id: str
    owner_id: str
    url: str
    reason: str
    disabled_at: datetime


@event_type("notification.broadcast.batch_queued")
class BroadcastBatchQueued(_Data):
    """One batch of an admin's role broadcast is due: the next users holding ``role`` (in id
    order after ``after``) get it in-app and by push. Internal to the notification service:
    a broadcast is fanned out batch by batch through the bus, each batch queueing the next."""

    model_config = examples(
        {
            "broadcast_id": "bc_019c3a87a1b24c3d8e4f5a6b7c8d9e0f",
            "role": "contractor",
            "category": "marketing",
            "title": "New: instant payouts",
            "body": "Withdrawals now arrive within minutes.",
            "batch": 0,
            "after": None,
            "requested_by": "019c3a86f5a64b7c9d8e9f0a1b2c3d4e",
        }
    )

    broadcast_id: str
    role: str
    category: str
    title: str
    body: str
    batch: int
    after: str | None = None
    requested_by: str

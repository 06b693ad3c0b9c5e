"""The webhook channel: each event to every subscription that wants it and may see it.

Per (subscription, event) one delivery record, claimed before an attempt (a lease, so a
crashed consumer's attempt is taken over), so a redelivered event posts nothing that was
delivered. The subscriptions of one event are attempted concurrently (a slow endpoint
holds up no other); one that failed leaves its record ``pending`` and the event goes down
the webhook queue's own retry tiers, where only the still-pending records are attempted.

- 2xx: delivered (the subscription is no longer failing);
- 410 Gone: the subscription is disabled at once;
- anything else, timeouts, refused connections: retried; a subscription failing for
  ``WEBHOOK_DISABLE_AFTER`` (24 h) is disabled;
- a target the SSRF guard refuses: failed, not retried.

Disabling stages ``notification.webhook.disabled`` in the same write (outbox); the
``webhook_notices`` subscription emails the owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.webhook_http import WebhookSender
from notification_svc.adapters.webhooks import WebhookDelivery, WebhookStore
from notification_svc.domain.preferences import Preferences
from notification_svc.domain.webhooks import (
    FINAL_WEBHOOK_STATUSES,
    NEVER_SENT,
    Subscription,
    category_of,
    concerned_users,
    matching,
)
from notification_svc.metrics import NotificationMetrics
from switchyard.directory import UserDirectory
from switchyard.envelope import Event, new_envelope, utcnow
from switchyard.events.notification import WebhookDisabled

log = logging.getLogger("notification.webhooks")
Outcome = Literal["done", "retry"]


class WebhookRetry(Exception):
    """Some subscriptions' endpoints failed; the event is retried for them only."""


@dataclass(frozen=True)
class WebhookChannel:
    store: WebhookStore
    sender: WebhookSender
    preferences: PreferenceStore
    metrics: NotificationMetrics
    owner: str
    notify_relay: Callable[[], None]
    disable_after: timedelta = timedelta(hours=24)
    lease: timedelta = timedelta(seconds=60)
    concurrency: int = 64
    # Where an admin subscription's owner is checked to still be an admin (None: not checked).
    directory: UserDirectory | None = None


async def _may_see(
    subscription: Subscription, data: Any, *, channel: WebhookChannel, admins: dict[str, bool]
) -> bool:
    """The owner's own events; all events only while the owner is still an admin as far as
    auth's events tell (a demoted admin's subscription falls back to their own events; an
    owner the directory does not know keeps the scope the token had at creation)."""
    if subscription.owner_id in concerned_users(data):
        return True
    if not subscription.may_see(data):
        return False
    owner = subscription.owner_id
    if channel.directory is None:
        return True
    if owner not in admins:
        known = await channel.directory.get(owner)
        admins[owner] = known is None or known.has_role("admin")
    return admins[owner]


async def deliver_event(event: Event[Any], *, channel: WebhookChannel) -> int:
    """Deliver ``event`` to its subscriptions; returns how many were delivered now."""
    if event.type in NEVER_SENT:
        return 0
    subscriptions = matching(await channel.store.active(), event.type)
    if not subscriptions:
        return 0
    payload = event.envelope.to_json().decode()
    category = category_of(event.type)
    gate = asyncio.Semaphore(channel.concurrency)
    work: list[tuple[Subscription, WebhookDelivery, bool]] = []
    choices: dict[str, Preferences] = {}
    admins: dict[str, bool] = {}
    for subscription in subscriptions:
        if not await _may_see(subscription, event.data, channel=channel, admins=admins):
            continue
        owner = subscription.owner_id
        if owner not in choices:
            choices[owner] = await channel.preferences.get(owner)
        if not choices[owner].allows(category, "webhook"):
            await channel.store.open(
                subscription,
                event_id=event.id,
                event_type=event.type,
                payload=payload,
                status="suppressed",
                reason="opted-out",
            )
            continue
        delivery, created = await channel.store.open(
            subscription,
            event_id=event.id,
            event_type=event.type,
            payload=payload,
            claim_for=(channel.owner, channel.lease),
        )
        if created or delivery.status not in FINAL_WEBHOOK_STATUSES:
            work.append((subscription, delivery, created))

    async def one(subscription: Subscription, delivery: WebhookDelivery, held: bool) -> Outcome:
        async with gate:
            return await attempt(subscription, delivery, channel=channel, claimed=held)

    outcomes = await asyncio.gather(*(one(s, d, held) for s, d, held in work))
    if "retry" in outcomes:
        failing = outcomes.count("retry")
        raise WebhookRetry(f"{failing} of {len(outcomes)} webhook endpoints failed")
    return len(outcomes)


async def attempt(
    subscription: Subscription,
    delivery: WebhookDelivery,
    *,
    channel: WebhookChannel,
    force: bool = False,
    claimed: bool = False,
) -> Outcome:
    """One attempt of one delivery (``force``: a manual redelivery of a finished one;
    ``claimed``: the record was created already claimed by this consumer)."""
    if not claimed and (
        await channel.store.claim(
            delivery.id, owner=channel.owner, lease=channel.lease, force=force
        )
        is None
    ):
        current = await channel.store.get_delivery(subscription.id, delivery.id)
        return "done" if current and current.status in FINAL_WEBHOOK_STATUSES else "retry"
    result = await channel.sender.post(
        subscription.url,
        secret=subscription.secret,
        msg_id=delivery.event_id,  # receivers de-duplicate on the event id
        payload=delivery.payload,
        at=utcnow(),
    )
    endpoint = subscription.id
    if result.ok:
        await channel.store.record_attempt(
            delivery.id, owner=channel.owner, status="delivered", attempt=result
        )
        if subscription.failing_since is not None:
            await channel.store.succeeded(subscription.id)
        channel.metrics.webhook_attempt(endpoint, "delivered", result.latency_ms / 1000)
        return "done"
    if result.status_code == 410:
        await channel.store.record_attempt(
            delivery.id, owner=channel.owner, status="failed", attempt=result
        )
        channel.metrics.webhook_attempt(endpoint, "gone", result.latency_ms / 1000)
        await disable(subscription, reason="gone", channel=channel)
        return "done"
    if result.refused:
        await channel.store.record_attempt(
            delivery.id, owner=channel.owner, status="failed", attempt=result
        )
        channel.metrics.webhook_attempt(endpoint, "refused", None)
        log.warning("webhook target refused by the SSRF guard", extra={"subscription_id": endpoint})
        return "done"
    channel.metrics.webhook_attempt(endpoint, "failed", result.latency_ms / 1000)
    now = utcnow()
    since = await channel.store.failing_since(subscription.id, now)
    if now - since >= channel.disable_after:
        await channel.store.record_attempt(
            delivery.id, owner=channel.owner, status="failed", attempt=result
        )
        await disable(subscription, reason="failing", channel=channel)
        return "done"
    await channel.store.record_attempt(
        delivery.id, owner=channel.owner, status="pending", attempt=result
    )
    return "retry"


async def disable(subscription: Subscription, *, reason: str, channel: WebhookChannel) -> None:
    envelope = new_envelope(
        WebhookDisabled(
            subscription_id=subscription.id,
            owner_id=subscription.owner_id,
            url=subscription.url,
            reason=reason,
            disabled_at=utcnow(),
        ),
        service="notification",
        subject=subscription.owner_id,
    )
    if await channel.store.disable(subscription.id, reason=reason, event=envelope):
        channel.metrics.webhook_disabled(reason)
        channel.notify_relay()
        log.warning(
            "webhook subscription disabled",
            extra={"subscription_id": subscription.id, "reason": reason},
        )

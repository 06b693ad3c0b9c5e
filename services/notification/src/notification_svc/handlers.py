"""Event handlers: plain async functions; dependencies are bound in entrypoints/consumers.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from notification_svc.adapters.deliveries import DeliveryStore
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.templates import EmailRenderer
from notification_svc.domain.deliveries import (
    ERASED_RECIPIENT,
    Delivery,
    DeliveryDeferred,
    DeliveryInProgress,
    DeliveryRejected,
    NewDelivery,
)
from notification_svc.domain.emails import EmailRequest, OutgoingEmail, email_for
from notification_svc.domain.preferences import ALWAYS_SENT
from notification_svc.metrics import NotificationMetrics
from switchyard.bus import PermanentError
from switchyard.directory import UserDirectory, apply_user_event
from switchyard.envelope import Event, utcnow
from switchyard.events.auth import UserDeleted, UserRegistered, UserUpdated, UserVerified
from switchyard.leases import kept_alive

log = logging.getLogger("notification.handlers")


class Mailer(Protocol):
    async def send(self, email: OutgoingEmail) -> str:
        """Send; return the provider's acceptance. Raise DeliveryRejected or DeliveryDeferred."""
        ...


@dataclass(frozen=True)
class EmailChannel:
    """Everything sending one email needs."""

    deliveries: DeliveryStore
    directory: UserDirectory
    preferences: PreferenceStore
    mailer: Mailer
    renderer: EmailRenderer
    metrics: NotificationMetrics
    # Who holds a claim (one value per process) and for how long before others may take it over.
    owner: str
    claim_lease: timedelta = timedelta(seconds=60)
    # Sends the provider accepted whose record could not be updated (the store failed at that
    # moment), by delivery id: the event is retried, and its retry records them, not resends.
    unrecorded: dict[str, str] = field(default_factory=dict)


async def send_email(
    request: EmailRequest, *, event: Event[Any], channel: EmailChannel
) -> Delivery:
    """Deliver ``request`` once per (event, channel, recipient), recording the outcome."""
    template = request.kind.value
    new = NewDelivery(
        event_id=event.id,
        event_type=event.type,
        channel="email",
        recipient=request.recipient,
        user_id=request.user_id,
        template=template,
        category=request.category,
    )
    # Log fields: what the lines of this delivery share (the attempt number joins later).
    fields: dict[str, object] = {
        "event_id": event.id,
        "template": template,
        "user_id": request.user_id,
    }

    contact = await channel.directory.get(request.user_id)
    if contact is not None and contact.deleted:
        delivery = await channel.deliveries.open(
            replace(new, recipient=ERASED_RECIPIENT), status="suppressed", reason="user-deleted"
        )
        channel.metrics.outcome("email", template, "suppressed")
        log.info("email suppressed: the user was deleted", extra=fields)
        return delivery
    if request.category not in ALWAYS_SENT:  # only then can preferences say no
        preferences = await channel.preferences.get(request.user_id)
        if not preferences.allows(request.category, "email"):
            delivery = await channel.deliveries.open(new, status="suppressed", reason="opted-out")
            channel.metrics.outcome("email", template, "suppressed")
            log.info("email suppressed by the user's preferences", extra=fields)
            return delivery

    content = channel.renderer.render(
        request.kind, display_name=request.display_name, context=request.context
    )
    delivery, created = await channel.deliveries.open_claimed(
        new, owner=channel.owner, lease=channel.claim_lease
    )
    claimed: Delivery | None = delivery
    if not created:
        if delivery.id in channel.unrecorded:
            return await _record_sent(delivery, channel.unrecorded[delivery.id], channel)
        if delivery.final:
            channel.metrics.outcome("email", template, "duplicate")
            log.info("email already handled", extra={**fields, "status": delivery.status})
            return delivery
        claimed = await channel.deliveries.claim(
            delivery.id, owner=channel.owner, lease=channel.claim_lease
        )
    if claimed is None:
        current = await channel.deliveries.get(delivery.id)
        if current is not None and current.final:
            channel.metrics.outcome("email", template, "duplicate")
            return current
        raise DeliveryInProgress(f"delivery {delivery.id} is being sent by another consumer")

    outgoing = OutgoingEmail(
        recipient=request.recipient,
        display_name=request.display_name,
        content=content,
        reference=delivery.id,
    )
    fields = {**fields, "delivery_id": delivery.id, "attempt": claimed.attempts}
    started = time.perf_counter()
    try:
        response = await _send_holding_claim(channel, delivery.id, outgoing)
    except DeliveryRejected as rejected:
        channel.metrics.attempt_took("email", time.perf_counter() - started)
        await channel.deliveries.mark_failed(
            delivery.id, owner=channel.owner, response=rejected.response
        )
        channel.metrics.outcome("email", template, "failed")
        log.warning(
            "email rejected for good",
            extra={**fields, "smtp_reply": _reply_code(rejected.response)},
        )
        return replace(claimed, status="failed", provider_response=rejected.response)
    except DeliveryDeferred as deferred:
        channel.metrics.attempt_took("email", time.perf_counter() - started)
        await channel.deliveries.release(
            delivery.id, owner=channel.owner, response=deferred.response
        )
        channel.metrics.outcome("email", template, "deferred")
        log.warning(
            "email deferred; the event will be retried",
            extra={**fields, "smtp_reply": _reply_code(deferred.response)},
        )
        raise
    except Exception as error:
        await channel.deliveries.release(
            delivery.id, owner=channel.owner, response=f"error: {type(error).__name__}"
        )
        raise
    sent_seconds = time.perf_counter() - started
    try:
        await channel.deliveries.mark_sent(delivery.id, response=response)
    except Exception:
        channel.unrecorded[delivery.id] = response
        log.warning("email sent but not recorded; the retry records it", extra=fields)
        raise
    channel.metrics.outcome("email", template, "sent")
    channel.metrics.sent_after(
        "email",
        send_seconds=sent_seconds,
        lag_seconds=(utcnow() - event.envelope.time).total_seconds(),
    )
    log.info("email sent", extra=fields)
    return replace(claimed, status="sent", provider_response=response)


async def _send_holding_claim(
    channel: EmailChannel, delivery_id: str, outgoing: OutgoingEmail
) -> str:
    """Send while renewing the claim, so a slow mail server never lets another consumer
    take the delivery over; should one take it over anyway, this send is abandoned."""
    sending = asyncio.ensure_future(channel.mailer.send(outgoing))

    async def renew() -> bool:
        return await channel.deliveries.renew(
            delivery_id, owner=channel.owner, lease=channel.claim_lease
        )

    async with kept_alive(
        renew,
        every=max(channel.claim_lease.total_seconds() / 3, 0.05),
        what=f"delivery claim {delivery_id}",
        on_lost=sending.cancel,
    ) as tenure:
        try:
            return await sending
        except asyncio.CancelledError:
            if tenure.lost and sending.cancelled():
                raise DeliveryInProgress(f"delivery {delivery_id} was taken over") from None
            raise


async def _record_sent(delivery: Delivery, response: str, channel: EmailChannel) -> Delivery:
    """Record a send an earlier attempt of this event made but could not record."""
    await channel.deliveries.mark_sent(delivery.id, response=response)
    channel.unrecorded.pop(delivery.id, None)  # a concurrent copy may have recorded it too
    channel.metrics.outcome("email", delivery.template, "sent")
    log.info(
        "email sent earlier, recorded now",
        extra={"event_id": delivery.event_id, "delivery_id": delivery.id},
    )
    return replace(delivery, status="sent", provider_response=response)


def _reply_code(response: str) -> str:
    """The reply code only: the full text may quote the recipient's address, which logs must not."""
    head = response.split(" ", 1)[0]
    return head if head.isdigit() else response.split(":", 1)[0][:60]


async def handle_email_event(event: Event[Any], *, email: EmailChannel) -> None:
    """The ``emails`` subscription: the email each auth event calls for, sent once."""
    request = email_for(event.data, now=utcnow())
    if request is None:
        raise PermanentError(f"no email is sent for {event.type}")
    await send_email(request, event=event, channel=email)


@dataclass(frozen=True)
class UserStores:
    """Everything the service keeps about a user: the read model, deliveries, preferences."""

    directory: UserDirectory
    deliveries: DeliveryStore
    preferences: PreferenceStore


async def follow_user(
    data: UserRegistered | UserVerified | UserUpdated, *, users: UserStores
) -> None:
    """Keep the newest profile and status (events may arrive out of order, twice)."""
    await apply_user_event(users.directory, data)


async def user_deleted(data: UserDeleted, *, users: UserStores) -> None:
    """Erase everything about the user; a tombstone keeps late events from reviving them."""
    await apply_user_event(users.directory, data)
    erased = await users.deliveries.erase_recipient(data.user_id, erased_at=data.deleted_at)
    await users.preferences.erase(data.user_id)
    log.info("erased a deleted user's data", extra={"user_id": data.user_id, "deliveries": erased})


class UserEventHandler(Protocol):
    async def __call__(self, data: Any, /, *, users: UserStores) -> None: ...


# The one list of user events the read model follows: the ``user_directory`` subscription
# is bound to exactly these event types (derived from the catalog).
USER_EVENT_HANDLERS: Mapping[type[BaseModel], UserEventHandler] = {
    UserRegistered: follow_user,
    UserVerified: follow_user,
    UserUpdated: follow_user,
    UserDeleted: user_deleted,
}


async def handle_user_event(event: Event[Any], *, users: UserStores) -> None:
    """The ``user_directory`` subscription: each user event to its handler above."""
    handler = USER_EVENT_HANDLERS.get(type(event.data))
    if handler is None:
        raise PermanentError(f"the user read model does not handle {event.type}")
    await handler(event.data, users=users)

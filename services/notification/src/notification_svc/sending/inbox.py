"""The in-app channel: one inbox item and one delivery record per (event, user)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from notification_svc.adapters.deliveries import DeliveryStore
from notification_svc.adapters.inbox import InboxStore
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.domain.deliveries import ERASED_RECIPIENT, Delivery, NewDelivery
from notification_svc.domain.push import PushRequest
from notification_svc.metrics import NotificationMetrics
from notification_svc.sending.push import Audience
from switchyard.directory import UserDirectory


@dataclass(frozen=True)
class InAppChannel:
    inbox: InboxStore
    deliveries: DeliveryStore
    directory: UserDirectory
    preferences: PreferenceStore
    metrics: NotificationMetrics


async def post_in_app(
    request: PushRequest,
    *,
    event_id: str,
    event_type: str,
    channel: InAppChannel,
    audience: Audience | None = None,
) -> Delivery:
    """Add ``request`` to its user's inbox unless preferences say no (then ``suppressed``)."""
    new = NewDelivery(
        event_id=event_id,
        event_type=event_type,
        channel="in_app",
        recipient=request.user_id,
        user_id=request.user_id,
        template=request.template,
        category=request.category,  # type: ignore[arg-type]
    )
    audience = audience or Audience(channel.directory, channel.preferences)
    why_not = await audience.why_not(request.user_id, new.category, "in_app")
    if why_not is not None:
        if why_not == "user-deleted":
            new = replace(new, recipient=ERASED_RECIPIENT)
        channel.metrics.outcome("in_app", request.template, "suppressed")
        return await channel.deliveries.open(new, status="suppressed", reason=why_not)
    _, created = await channel.inbox.add(
        user_id=request.user_id,
        event_id=event_id,
        category=request.category,
        title=request.title,
        body=request.body,
        data=request.data,
    )
    channel.metrics.outcome("in_app", request.template, "sent" if created else "duplicate")
    return await channel.deliveries.open(new, status="sent")

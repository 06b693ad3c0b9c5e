"""Bus subscriptions, one quorum queue per concern (``notification.<name>``, each with its
retry tiers and DLQ): ``emails`` sends, ``user_directory`` keeps the read model, so a
failing email never holds up the read model and the other way round."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from notification_svc import keys
from notification_svc.domain.emails import EMAIL_FOR_EVENT
from notification_svc.domain.notices import NOTICES_FOR_EVENT
from notification_svc.domain.webhooks import NEVER_SENT
from notification_svc.handlers import (
    USER_EVENT_HANDLERS,
    UserStores,
    handle_activity_event,
    handle_broadcast_batch,
    handle_chat_message,
    handle_email_event,
    handle_user_event,
    handle_webhook_disabled,
    handle_webhook_event,
)
from switchyard.bus import HandlerRegistry
from switchyard.envelope import CATALOG

# Each queue's routing keys are the catalog's names of the events its table handles.
EMAIL_EVENT_TYPES = CATALOG.types_of(EMAIL_FOR_EVENT)
USER_EVENT_TYPES = CATALOG.types_of(USER_EVENT_HANDLERS)
ACTIVITY_EVENT_TYPES = CATALOG.types_of(NOTICES_FOR_EVENT)
CHAT_EVENT_TYPES = ["chat.message.sent", "chat.conversation.created"]
# Webhooks may carry any catalog event except those holding one-time codes (and internal ones).
WEBHOOK_EVENT_TYPES = sorted({spec.type for spec in CATALOG} - NEVER_SENT)
WEBHOOK_NOTICE_TYPES = ["notification.webhook.disabled"]
BROADCAST_TYPES = ["notification.broadcast.batch_queued"]


def build_registry(app: web.Application) -> HandlerRegistry:
    email = app[keys.EMAIL_CHANNEL]
    users = UserStores(
        directory=app[keys.DIRECTORY],
        deliveries=app[keys.DELIVERIES],
        preferences=app[keys.PREFERENCES],
        personal=(app[keys.DEVICES], app[keys.INBOX], app[keys.CHAT_STATE]),
    )
    registry = HandlerRegistry()
    # No bus inbox here: the delivery record (unique per event, channel and recipient) already
    # makes a redelivered event send nothing, and the inbox would cost two store writes an email.
    registry.add(
        "emails", EMAIL_EVENT_TYPES, partial(handle_email_event, email=email), deduplicate=False
    )
    registry.add("user_directory", USER_EVENT_TYPES, partial(handle_user_event, users=users))
    channels = app[keys.CHANNELS]
    # Chat pushes and payment/file notices on queues of their own: a slow FCM or SMTP server
    # holds up neither the read model nor the auth emails.
    # No bus inbox on the channel queues: the delivery records (unique per event, channel and
    # recipient) and the inbox items (unique per event and user) make redeliveries send nothing.
    registry.add(
        "chat_pushes",
        CHAT_EVENT_TYPES,
        partial(handle_chat_message, channels=channels),
        deduplicate=False,
    )
    registry.add(
        "activity", ACTIVITY_EVENT_TYPES, partial(handle_activity_event, channels=channels)
    )
    settings = app[keys.NOTIFICATION_SETTINGS]
    # Webhooks: a queue of their own with retry tiers stretched to hours, and room for the
    # per-attempt timeout (attempts of one event run concurrently).
    registry.add(
        "webhooks",
        WEBHOOK_EVENT_TYPES,
        partial(handle_webhook_event, webhooks=app[keys.WEBHOOKS]),
        retry_delays=settings.webhook_retry_delays,
        timeout=settings.webhook_timeout * 3 + 30,
    )
    registry.add(
        "broadcasts",
        BROADCAST_TYPES,
        partial(
            handle_broadcast_batch,
            channels=channels,
            broadcasts=app[keys.BROADCASTS],
            batch_size=settings.broadcast_batch_size,
        ),
    )
    registry.add(
        "webhook_notices",
        WEBHOOK_NOTICE_TYPES,
        partial(
            handle_webhook_disabled,
            email=email,
            failing_hours=settings.webhook_disable_after_seconds / 3600,
        ),
    )
    return registry

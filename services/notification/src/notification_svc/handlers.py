"""Event handlers: plain async functions; dependencies are bound in entrypoints/consumers.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from notification_svc.adapters.broadcasts import BroadcastStore
from notification_svc.adapters.chat_state import ChatStateStore, Window
from notification_svc.adapters.deliveries import DeliveryStore
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.templates import EmailRenderer, ShortText
from notification_svc.domain.deliveries import (
    ERASED_RECIPIENT,
    Delivery,
    DeliveryDeferred,
    DeliveryInProgress,
    DeliveryRejected,
    NewDelivery,
)
from notification_svc.domain.emails import EmailKind, EmailRequest, OutgoingEmail, email_for
from notification_svc.domain.notices import Notice, notices_for
from notification_svc.domain.preferences import ALWAYS_SENT
from notification_svc.domain.push import PushRequest
from notification_svc.domain.unsubscribe import UnsubscribeLinks
from notification_svc.metrics import NotificationMetrics
from notification_svc.sending.inbox import InAppChannel, post_in_app
from notification_svc.sending.push import Audience, PushChannel, push_to
from notification_svc.sending.webhooks import WebhookChannel, deliver_event
from switchyard.bus import PermanentError, RetryLater
from switchyard.directory import UserDirectory, apply_user_event
from switchyard.envelope import Event, utcnow
from switchyard.events.auth import UserDeleted, UserRegistered, UserUpdated, UserVerified
from switchyard.events.chat import ConversationCreated, MessageSent
from switchyard.events.notification import BroadcastBatchQueued, WebhookDisabled
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
    # List-Unsubscribe links for non-transactional categories (None: no such headers).
    unsubscribe: UnsubscribeLinks | None = None
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
        headers=(
            channel.unsubscribe.headers(request.user_id, request.category)
            if channel.unsubscribe is not None
            else {}
        ),
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
    """Everything the service keeps about a user: the read model, deliveries, preferences,
    and (when given) devices, inbox and chat state."""

    directory: UserDirectory
    deliveries: DeliveryStore
    preferences: PreferenceStore
    personal: tuple[ErasableStore, ...] = ()


class ErasableStore(Protocol):
    async def erase_user(self, user_id: str) -> None: ...


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
    for store in users.personal:  # devices, inbox, chat state
        await store.erase_user(data.user_id)
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


# -- push, in-app: chat messages, payments, files ---------------------------------------------


@dataclass(frozen=True)
class Channels:
    """Every channel a chat, payment or file event may go out on."""

    email: EmailChannel
    push: PushChannel
    in_app: InAppChannel
    chat_state: ChatStateStore
    renderer: EmailRenderer
    # At most one chat push per conversation per user in this window; the rest fold.
    push_window: timedelta = timedelta(seconds=30)
    digest_lease: timedelta = timedelta(seconds=60)
    # Wakes the outbox relay after a write staged an event (the next broadcast batch).
    notify_relay: Callable[[], None] = lambda: None


def _chat_request(
    template: str, text: ShortText, *, user_id: str, conversation_id: str, data: Mapping[str, str]
) -> PushRequest:
    return PushRequest(
        user_id=user_id,
        category="chat",
        template=template,
        title=text.title,
        body=text.body,
        data=data,
        collapse_key=f"chat-{conversation_id}"[:64],
        thread_id=f"chat-{conversation_id}",
    )


async def handle_chat_message(event: Event[Any], *, channels: Channels) -> None:
    """``chat.message.sent``: in-app + push to each offline recipient who has not muted the
    conversation; one push per conversation per window, later messages fold into a digest.
    ``chat.conversation.created`` (groups): the added members hear about it."""
    data = event.data
    if isinstance(data, ConversationCreated):
        await _group_created(event, data, channels)
        return
    if not isinstance(data, MessageSent):
        raise PermanentError(f"the chat subscription does not handle {event.type}")
    state = channels.chat_state
    # The sender has seen everything up to their own message.
    await state.mark_read(data.sender_id, data.conversation_id, data.seq)
    sender = await channels.email.directory.get(data.sender_id)
    sender_name = (sender.display_name if sender else None) or "Someone"
    text = channels.renderer.short(
        "chat_message", {"sender_name": sender_name, "preview": data.preview}
    )
    link = {
        "kind": "chat",
        "conversation_id": data.conversation_id,
        "message_id": data.message_id,
        "seq": str(data.seq),
    }
    now = utcnow()
    pushes: list[PushRequest] = []
    audience = Audience(channels.push.directory, channels.push.preferences)
    for user_id in dict.fromkeys(data.offline_recipient_ids):
        if user_id == data.sender_id:
            continue  # never a push to the sender
        request = _chat_request(
            "chat_message",
            text,
            user_id=user_id,
            conversation_id=data.conversation_id,
            data=link,
        )
        current = await state.get(user_id, data.conversation_id)
        why_not = (
            "muted" if current.muted else "already-read" if current.read_seq >= data.seq else None
        )
        if why_not is not None:
            for name in ("push", "in_app"):
                await _record_suppressed(channels, event, request, name, why_not)
            continue
        await post_in_app(
            request,
            event_id=event.id,
            event_type=event.type,
            channel=channels.in_app,
            audience=audience,
        )
        window = await state.open_window(
            user_id,
            data.conversation_id,
            message_id=data.message_id,
            seq=data.seq,
            sender_id=data.sender_id,
            now=now,
            window=channels.push_window,
        )
        if window is Window.FOLDED:
            channels.push.metrics.digest_folded()
            await _record_suppressed(channels, event, request, "push", "folded-into-digest")
            continue
        pushes.append(request)
    await push_to(
        pushes, event_id=event.id, event_type=event.type, channel=channels.push, audience=audience
    )


async def _group_created(event: Event[Any], data: ConversationCreated, channels: Channels) -> None:
    """A group conversation: its members (not the creator) hear they were added, in-app and
    by push. Direct conversations say nothing until their first message."""
    if data.kind != "group":
        return
    creator = await channels.email.directory.get(data.created_by)
    text = channels.renderer.short(
        "chat_group_added",
        {
            "creator_name": (creator.display_name if creator else None) or "Someone",
            "title": data.title or "a group",
        },
    )
    audience = Audience(channels.push.directory, channels.push.preferences)
    requests = [
        _chat_request(
            "chat_group_added",
            text,
            user_id=member,
            conversation_id=data.conversation_id,
            data={"kind": "chat", "conversation_id": data.conversation_id},
        )
        for member in dict.fromkeys(data.member_ids)
        if member != data.created_by
    ]
    for request in requests:
        await post_in_app(
            request,
            event_id=event.id,
            event_type=event.type,
            channel=channels.in_app,
            audience=audience,
        )
    await push_to(
        requests, event_id=event.id, event_type=event.type, channel=channels.push, audience=audience
    )


async def _record_suppressed(
    channels: Channels, event: Event[Any], request: PushRequest, channel: str, reason: str
) -> None:
    new = NewDelivery(
        event_id=event.id,
        event_type=event.type,
        channel=channel,  # type: ignore[arg-type]
        recipient=request.user_id,
        user_id=request.user_id,
        template=request.template,
        category=request.category,  # type: ignore[arg-type]
    )
    await channels.push.deliveries.open(new, status="suppressed", reason=reason)
    channels.push.metrics.outcome(channel, request.template, "suppressed")


async def flush_digests(*, channels: Channels) -> int:
    """Send the digest of every window that closed with folded messages; returns how many.

    Run every second or so by the app (any replica: a digest is taken with a guarded update,
    and its push record is keyed by the digest's id, so it is sent once)."""
    now = utcnow()
    sent = 0
    for due in await channels.chat_state.due_digests(now):
        taken = await channels.chat_state.take_digest(
            due, now=now, window=channels.push_window, lease=channels.digest_lease
        )
        if taken is None or taken.flush_id is None:
            continue
        unread = [f for f in taken.flushing if f.seq > taken.read_seq]
        if unread and not taken.muted:
            senders = await channels.email.directory.get_many(f.sender_id for f in unread)
            names = list(
                dict.fromkeys(
                    (senders[f.sender_id].display_name if f.sender_id in senders else None)
                    or "Someone"
                    for f in unread
                )
            )
            text = channels.renderer.short(
                "chat_digest", {"count": len(unread), "sender_names": " and ".join(names[:3])}
            )
            last = unread[-1]
            request = _chat_request(
                "chat_digest",
                text,
                user_id=taken.user_id,
                conversation_id=taken.conversation_id,
                data={
                    "kind": "chat",
                    "conversation_id": taken.conversation_id,
                    "message_id": last.message_id,
                    "seq": str(last.seq),
                    "count": str(len(unread)),
                },
            )
            try:
                await push_to(
                    [request],
                    event_id=taken.flush_id,
                    event_type="chat.message.sent",
                    channel=channels.push,
                )
            except (RetryLater, DeliveryInProgress) as error:
                # The lease runs out and a later round sends it again (the record is pending).
                log.warning("digest push deferred", extra={"error": str(error)[:200]})
                continue
            sent += 1
        await channels.chat_state.digest_sent(taken)
    return sent


async def handle_activity_event(event: Event[Any], *, channels: Channels) -> None:
    """Payment and file events: email + push + in-app to the people each concerns."""
    notices = notices_for(event.data)
    if notices is None:
        raise PermanentError(f"no notice is sent for {event.type}")
    pushes: list[PushRequest] = []
    audience = Audience(channels.push.directory, channels.push.preferences)
    for notice in notices:
        text = channels.renderer.short(notice.template, notice.context)
        request = PushRequest(
            user_id=notice.user_id,
            category=notice.category,
            template=notice.template,
            title=text.title,
            body=text.body,
            data=notice.data,
            collapse_key=f"{notice.category}-{next(iter(notice.data.values()), '')}"[:64],
            thread_id=notice.category,
        )
        if "in_app" in notice.channels:
            await post_in_app(
                request,
                event_id=event.id,
                event_type=event.type,
                channel=channels.in_app,
                audience=audience,
            )
        if "email" in notice.channels:
            await _email_notice(event, notice, text, channels)
        if "push" in notice.channels:
            pushes.append(request)
    await push_to(
        pushes, event_id=event.id, event_type=event.type, channel=channels.push, audience=audience
    )


async def _email_notice(
    event: Event[Any], notice: Notice, text: ShortText, channels: Channels
) -> None:
    contact = await channels.email.directory.get(notice.user_id)
    if contact is None or (not contact.deleted and not contact.email):
        # Not yet in the read model (events race): retried until auth's event arrived.
        raise LookupError(f"no email address known for user {notice.user_id} yet")
    request = EmailRequest(
        kind=EmailKind.PAYMENT,
        user_id=notice.user_id,
        recipient=contact.email or ERASED_RECIPIENT,
        display_name=contact.display_name or "",
        context={"title": text.title, "body": text.body, "facts": list(notice.facts)},
    )
    await send_email(request, event=event, channel=channels.email)


# -- webhooks --------------------------------------------------------------------------------


async def handle_webhook_event(event: Event[Any], *, webhooks: WebhookChannel) -> None:
    """Every catalog event (but those carrying codes) to the subscriptions that want it."""
    await deliver_event(event, channel=webhooks)


async def handle_webhook_disabled(
    event: Event[Any], *, email: EmailChannel, failing_hours: float
) -> None:
    """``notification.webhook.disabled``: tell the subscription's owner by email."""
    data = event.data
    if not isinstance(data, WebhookDisabled):
        raise PermanentError(f"the webhook notices subscription does not handle {event.type}")
    contact = await email.directory.get(data.owner_id)
    if contact is None or (not contact.deleted and not contact.email):
        raise LookupError(f"no email address known for user {data.owner_id} yet")
    request = EmailRequest(
        kind=EmailKind.WEBHOOK_DISABLED,
        user_id=data.owner_id,
        recipient=contact.email or ERASED_RECIPIENT,
        display_name=contact.display_name or "",
        context={
            "url": data.url,
            "reason": data.reason,
            "subscription_id": data.subscription_id,
            "disabled_at": data.disabled_at,
            "failing_hours": f"{failing_hours:g}",
        },
    )
    await send_email(request, event=event, channel=email)


# -- role broadcasts -------------------------------------------------------------------------


async def handle_broadcast_batch(
    event: Event[Any], *, channels: Channels, broadcasts: BroadcastStore, batch_size: int
) -> None:
    """One batch of a role broadcast: in-app + push to the next ``batch_size`` users holding the
    role (preferences honoured), then the next batch is queued in the same write as this
    batch's progress."""
    data = event.data
    if not isinstance(data, BroadcastBatchQueued):
        raise PermanentError(f"the broadcasts subscription does not handle {event.type}")
    users = await channels.email.directory.with_role(data.role, after=data.after, limit=batch_size)
    text = channels.renderer.short("broadcast", {"title": data.title, "body": data.body})
    requests = [
        PushRequest(
            user_id=user.user_id,
            category=data.category,
            template="broadcast",
            title=text.title,
            body=text.body,
            data={"kind": "broadcast", "broadcast_id": data.broadcast_id},
            collapse_key=f"broadcast-{data.broadcast_id}"[:64],
            thread_id="broadcast",
        )
        for user in users
    ]
    for request in requests:
        await post_in_app(
            request, event_id=event.id, event_type=event.type, channel=channels.in_app
        )
    await push_to(requests, event_id=event.id, event_type=event.type, channel=channels.push)
    last = users[-1].user_id if len(users) == batch_size else None
    if await broadcasts.batch_done(data, sent_to=len(users), last=last):
        channels.notify_relay()
    log.info(
        "broadcast batch sent",
        extra={"broadcast_id": data.broadcast_id, "batch": data.batch, "users": len(users)},
    )

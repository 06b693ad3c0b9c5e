"""The push channel: one delivery record per (event, user), FCM answers acted on.

A user's devices get one message each, sent in FCM batches of at most 500 across all
the users of an event. A token FCM calls unregistered (or invalid) is removed at once;
429/5xx answers give the user's claim back and the event goes down the bus retry tiers
(:class:`switchyard.bus.RetryLater` carries FCM's ``Retry-After``); users already sent
are not sent again on the retry (their record is final).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Protocol

from notification_svc.adapters.deliveries import DeliveryStore
from notification_svc.adapters.devices import DeviceStore
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.domain.deliveries import (
    ERASED_RECIPIENT,
    Delivery,
    DeliveryInProgress,
    NewDelivery,
)
from notification_svc.domain.preferences import Category, Channel, Preferences
from notification_svc.domain.push import (
    Push,
    PushAuthFailed,
    PushOutcome,
    PushRequest,
    PushResult,
)
from notification_svc.metrics import NotificationMetrics
from switchyard.bus import RetryLater
from switchyard.directory import UserDirectory

log = logging.getLogger("notification.push")


class Pusher(Protocol):
    async def send(self, pushes: Sequence[Push]) -> list[PushResult]:
        """One result per push, in order."""
        ...


@dataclass(frozen=True)
class PushChannel:
    deliveries: DeliveryStore
    devices: DeviceStore
    directory: UserDirectory
    preferences: PreferenceStore
    pusher: Pusher | None  # None: FCM_CREDENTIALS_FILE unset, pushes are recorded suppressed
    metrics: NotificationMetrics
    owner: str
    claim_lease: timedelta = timedelta(seconds=60)


@dataclass
class Audience:
    """Who may get what, looked up once per user for all the channels of one event."""

    directory: UserDirectory
    preferences: PreferenceStore
    _deleted: dict[str, bool] = field(default_factory=dict)
    _choices: dict[str, Preferences] = field(default_factory=dict)

    async def why_not(self, user_id: str, category: Category, channel: Channel) -> str | None:
        """Why a message may not go to ``user_id`` on ``channel`` (None: it may)."""
        if user_id not in self._deleted:
            contact = await self.directory.get(user_id)
            self._deleted[user_id] = contact is not None and contact.deleted
        if self._deleted[user_id]:
            return "user-deleted"
        if user_id not in self._choices:
            self._choices[user_id] = await self.preferences.get(user_id)
        if not self._choices[user_id].allows(category, channel):
            return "opted-out"
        return None


async def push_to(
    requests: Sequence[PushRequest],
    *,
    event_id: str,
    event_type: str,
    channel: PushChannel,
    audience: Audience | None = None,
) -> list[Delivery]:
    """Push each request to its user's devices, once per (event, user); returns the records."""
    audience = audience or Audience(channel.directory, channel.preferences)
    records: list[Delivery] = []
    claimed: dict[str, tuple[Delivery, PushRequest]] = {}
    busy = False
    for request in requests:
        new = NewDelivery(
            event_id=event_id,
            event_type=event_type,
            channel="push",
            recipient=request.user_id,
            user_id=request.user_id,
            template=request.template,
            category=request.category,  # type: ignore[arg-type]
        )
        why_not = await audience.why_not(request.user_id, new.category, "push")
        if why_not is None and channel.pusher is None:
            why_not = "push-not-configured"
        if why_not is not None:
            if why_not == "user-deleted":
                new = replace(new, recipient=ERASED_RECIPIENT)
            records.append(await channel.deliveries.open(new, status="suppressed", reason=why_not))
            channel.metrics.outcome("push", request.template, "suppressed")
            continue
        delivery, created = await channel.deliveries.open_claimed(
            new, owner=channel.owner, lease=channel.claim_lease
        )
        if not created:
            if delivery.final:
                channel.metrics.outcome("push", request.template, "duplicate")
                records.append(delivery)
                continue
            again = await channel.deliveries.claim(
                delivery.id, owner=channel.owner, lease=channel.claim_lease
            )
            if again is None:
                busy = True
                continue
            delivery = again
        claimed[request.user_id] = (delivery, request)

    if claimed:
        records += await _send_claimed(claimed, channel)
    if busy:
        raise DeliveryInProgress(f"another consumer is pushing event {event_id}")
    return records


async def _send_claimed(
    claimed: dict[str, tuple[Delivery, PushRequest]], channel: PushChannel
) -> list[Delivery]:
    assert channel.pusher is not None
    devices = await channel.devices.of_users(claimed)
    records: list[Delivery] = []
    pushes: list[Push] = []
    for user_id, (delivery, request) in claimed.items():
        if not devices.get(user_id):
            await channel.deliveries.finish(
                delivery.id,
                owner=channel.owner,
                status="suppressed",
                response="no registered devices",
                reason="no-devices",
            )
            channel.metrics.outcome("push", request.template, "suppressed")
            records.append(delivery)
            continue
        pushes += [
            Push(
                token=device.token,
                user_id=user_id,
                title=request.title,
                body=request.body,
                data=request.data,
                collapse_key=request.collapse_key,
                thread_id=request.thread_id,
            )
            for device in devices[user_id]
        ]
    if not pushes:
        return records

    started = time.perf_counter()
    try:
        results = await channel.pusher.send(pushes)
    except Exception as error:
        for user_id in {push.user_id for push in pushes}:
            delivery, request = claimed[user_id]
            await channel.deliveries.release(
                delivery.id, owner=channel.owner, response=f"error: {type(error).__name__}"
            )
            channel.metrics.outcome("push", request.template, "deferred")
        if isinstance(error, PushAuthFailed):
            channel.metrics.push_auth_failed()
        raise
    channel.metrics.attempt_took("push", time.perf_counter() - started)

    by_user: dict[str, list[PushResult]] = {}
    for result in results:
        by_user.setdefault(result.push.user_id, []).append(result)
        if result.outcome is PushOutcome.TOKEN_GONE:
            if await channel.devices.remove(result.push.token):
                channel.metrics.token_removed()
                log.info("push token removed", extra={"user_id": result.push.user_id})
        elif result.outcome is PushOutcome.AUTH_FAILED:
            channel.metrics.push_auth_failed()

    retry_after: float | None = None
    for user_id, outcomes in by_user.items():
        delivery, request = claimed[user_id]
        sent = [r for r in outcomes if r.outcome is PushOutcome.SENT]
        later = [
            r for r in outcomes if r.outcome in (PushOutcome.TRANSIENT, PushOutcome.AUTH_FAILED)
        ]
        summary = f"fcm: {len(sent)} of {len(outcomes)} devices"
        if sent:
            await channel.deliveries.mark_sent(delivery.id, response=summary)
            channel.metrics.outcome("push", request.template, "sent")
        elif later:
            await channel.deliveries.release(
                delivery.id, owner=channel.owner, response=f"{summary}; {later[0].detail}"
            )
            channel.metrics.outcome("push", request.template, "deferred")
            waits = [r.retry_after for r in later if r.retry_after is not None]
            retry_after = max([retry_after or 0.0, *waits])
        else:
            await channel.deliveries.mark_failed(
                delivery.id, owner=channel.owner, response=f"{summary}; {outcomes[0].detail}"
            )
            channel.metrics.outcome("push", request.template, "failed")
        records.append(delivery)
    if retry_after is not None:
        raise RetryLater("FCM asked to retry later", after=retry_after)
    return records

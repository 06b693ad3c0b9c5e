"""The one wiring place: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from aiohttp import web

from notification_svc import keys
from notification_svc.adapters import (
    broadcasts,
    chat_state,
    deliveries,
    devices,
    inbox,
    preferences,
)
from notification_svc.adapters import webhooks as webhook_store
from notification_svc.adapters.broadcasts import BroadcastStore
from notification_svc.adapters.chat_state import ChatStateStore, chat_state_indexes
from notification_svc.adapters.deliveries import DeliveryStore, delivery_indexes
from notification_svc.adapters.devices import DeviceStore, device_indexes
from notification_svc.adapters.fcm import FcmPusher
from notification_svc.adapters.inbox import InboxStore
from notification_svc.adapters.inbox import inbox_indexes as notification_inbox_indexes
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.smtp import SmtpMailer
from notification_svc.adapters.templates import EmailRenderer
from notification_svc.adapters.webhook_http import WebhookSender
from notification_svc.adapters.webhooks import SUBSCRIPTIONS, WebhookStore, webhook_indexes
from notification_svc.domain.unsubscribe import UnsubscribeLinks
from notification_svc.entrypoints.consumers import build_registry
from notification_svc.entrypoints.http import add_routes
from notification_svc.handlers import Channels, EmailChannel, flush_digests
from notification_svc.metrics import NotificationMetrics
from notification_svc.sending.inbox import InAppChannel
from notification_svc.sending.push import PushChannel
from notification_svc.sending.webhooks import WebhookChannel
from notification_svc.settings import NotificationSettings
from switchyard import keys as shared_keys
from switchyard.authn import authn_middleware, verifier_context
from switchyard.bus import bus_context, consumers_context, inbox_indexes
from switchyard.directory import UserDirectory
from switchyard.mongo import mongo_context
from switchyard.mongo.client import Index
from switchyard.outbox import outbox_context, outbox_indexes
from switchyard.revocation import revocation_context
from switchyard.web import new_app

log = logging.getLogger("notification.app")
# Disabling a webhook stages its event; each broadcast batch stages the next.
OUTBOX_COLLECTIONS = [SUBSCRIPTIONS, broadcasts.COLLECTION]
USERS_COLLECTION = "notification_users"  # the switchyard.directory read model


def indexes() -> list[Index]:
    return [
        *delivery_indexes(),
        *inbox_indexes(),
        *device_indexes(),
        *notification_inbox_indexes(),
        *chat_state_indexes(),
        *webhook_indexes(),
        *outbox_indexes(OUTBOX_COLLECTIONS),
    ]


def unsubscribe_links(settings: NotificationSettings) -> UnsubscribeLinks:
    secret = (
        settings.unsubscribe_secret.get_secret_value().encode()
        if settings.unsubscribe_secret is not None
        else secrets.token_bytes(32)  # development only (the settings refuse it elsewhere)
    )
    return UnsubscribeLinks(secret=secret, base_url=settings.public_base_url)


def channels_context(
    settings: NotificationSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Stores and the email channel; the SMTP connection is closed after the consumers stopped."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        db = app[shared_keys.MONGO_DB]
        app[keys.DELIVERIES] = DeliveryStore(db[deliveries.COLLECTION])
        app[keys.DIRECTORY] = UserDirectory(db[USERS_COLLECTION])
        app[keys.PREFERENCES] = PreferenceStore(db[preferences.COLLECTION])
        app[keys.DEVICES] = DeviceStore(db[devices.COLLECTION])
        app[keys.INBOX] = InboxStore(db[inbox.COLLECTION])
        app[keys.CHAT_STATE] = ChatStateStore(db[chat_state.COLLECTION])
        app[keys.BROADCASTS] = BroadcastStore(db[broadcasts.COLLECTION])
        app[keys.MAILER] = mailer = SmtpMailer.from_settings(settings)
        renderer = EmailRenderer(product_name=settings.product_name)
        metrics = app[keys.NOTIFICATION_METRICS]
        owner = uuid.uuid4().hex
        app[keys.EMAIL_CHANNEL] = email = EmailChannel(
            deliveries=app[keys.DELIVERIES],
            directory=app[keys.DIRECTORY],
            preferences=app[keys.PREFERENCES],
            mailer=mailer,
            renderer=renderer,
            metrics=metrics,
            owner=owner,
            unsubscribe=unsubscribe_links(settings),
        )
        app[keys.WEBHOOK_STORE] = webhooks = WebhookStore(
            db[webhook_store.SUBSCRIPTIONS], db[webhook_store.DELIVERIES]
        )
        sender = WebhookSender(
            allow_private=settings.webhook_allow_private_targets,
            timeout=settings.webhook_timeout,
            connections=settings.webhook_concurrency,
        )
        relay = app[shared_keys.OUTBOX_RELAY]
        app[keys.WEBHOOKS] = WebhookChannel(
            store=webhooks,
            sender=sender,
            preferences=app[keys.PREFERENCES],
            metrics=metrics,
            owner=owner,
            notify_relay=relay.notify,
            disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
            concurrency=settings.webhook_concurrency,
            directory=app[keys.DIRECTORY],
        )
        pusher = None
        if settings.fcm_credentials_file is not None:
            pusher = FcmPusher(
                settings.fcm_credentials_file,
                endpoint=settings.fcm_endpoint,
                timeout=settings.fcm_timeout,
            )
        else:
            log.warning("FCM_CREDENTIALS_FILE is not set: pushes are recorded as suppressed")
        app[keys.CHANNELS] = Channels(
            email=email,
            push=PushChannel(
                deliveries=app[keys.DELIVERIES],
                devices=app[keys.DEVICES],
                directory=app[keys.DIRECTORY],
                preferences=app[keys.PREFERENCES],
                pusher=pusher,
                metrics=metrics,
                owner=owner,
            ),
            in_app=InAppChannel(
                inbox=app[keys.INBOX],
                deliveries=app[keys.DELIVERIES],
                directory=app[keys.DIRECTORY],
                preferences=app[keys.PREFERENCES],
                metrics=metrics,
            ),
            chat_state=app[keys.CHAT_STATE],
            renderer=renderer,
            push_window=timedelta(seconds=settings.chat_push_window_seconds),
            notify_relay=relay.notify,
        )
        try:
            yield
        finally:
            await mailer.close()
            await sender.close()
            if pusher is not None:
                await pusher.close()

    return context


def digests_context(
    settings: NotificationSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The chat digest sender: every ``DIGEST_POLL_SECONDS``, send the closed windows' digests."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(settings.digest_poll_seconds)
                try:
                    await flush_digests(channels=app[keys.CHANNELS])
                except Exception:  # noqa: BLE001 - the next round tries again; logged
                    log.exception("sending chat digests failed; retrying next round")

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context


def create_app(settings: NotificationSettings) -> web.Application:
    app = new_app(settings)
    app[keys.NOTIFICATION_METRICS] = NotificationMetrics(app[shared_keys.METRICS])
    app[keys.NOTIFICATION_SETTINGS] = settings
    app.middlewares.append(authn_middleware())
    app.cleanup_ctx.extend(
        [
            mongo_context(indexes()),
            bus_context,
            outbox_context(OUTBOX_COLLECTIONS),
            verifier_context(),
            revocation_context(),  # revoked sessions refused within seconds
            channels_context(settings),
            consumers_context(build_registry),
            digests_context(settings),
        ]
    )
    add_routes(app)
    return app

"""The one wiring place: ``create_app(settings)``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from notification_svc import keys
from notification_svc.adapters import deliveries, preferences
from notification_svc.adapters.deliveries import DeliveryStore, delivery_indexes
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.smtp import SmtpMailer
from notification_svc.adapters.templates import EmailRenderer
from notification_svc.entrypoints.consumers import build_registry
from notification_svc.entrypoints.http import add_routes
from notification_svc.handlers import EmailChannel
from notification_svc.metrics import NotificationMetrics
from notification_svc.settings import NotificationSettings
from switchyard import keys as shared_keys
from switchyard.authn import authn_middleware, verifier_context
from switchyard.bus import bus_context, consumers_context, inbox_indexes
from switchyard.directory import UserDirectory
from switchyard.mongo import mongo_context
from switchyard.mongo.client import Index
from switchyard.revocation import revocation_context
from switchyard.web import new_app

USERS_COLLECTION = "notification_users"  # the switchyard.directory read model


def indexes() -> list[Index]:
    return [*delivery_indexes(), *inbox_indexes()]


def channels_context(
    settings: NotificationSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Stores and the email channel; the SMTP connection is closed after the consumers stopped."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        db = app[shared_keys.MONGO_DB]
        app[keys.DELIVERIES] = DeliveryStore(db[deliveries.COLLECTION])
        app[keys.DIRECTORY] = UserDirectory(db[USERS_COLLECTION])
        app[keys.PREFERENCES] = PreferenceStore(db[preferences.COLLECTION])
        app[keys.MAILER] = mailer = SmtpMailer.from_settings(settings)
        app[keys.EMAIL_CHANNEL] = EmailChannel(
            deliveries=app[keys.DELIVERIES],
            directory=app[keys.DIRECTORY],
            preferences=app[keys.PREFERENCES],
            mailer=mailer,
            renderer=EmailRenderer(product_name=settings.product_name),
            metrics=app[keys.NOTIFICATION_METRICS],
            owner=uuid.uuid4().hex,
        )
        try:
            yield
        finally:
            await mailer.close()

    return context


def create_app(settings: NotificationSettings) -> web.Application:
    app = new_app(settings)
    app[keys.NOTIFICATION_METRICS] = NotificationMetrics(app[shared_keys.METRICS])
    app.middlewares.append(authn_middleware())
    app.cleanup_ctx.extend(
        [
            mongo_context(indexes()),
            bus_context,
            verifier_context(),
            revocation_context(),  # revoked sessions refused within seconds
            channels_context(settings),
            consumers_context(build_registry),
        ]
    )
    add_routes(app)
    return app

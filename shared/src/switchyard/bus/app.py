"""``cleanup_ctx`` factories wiring the bus and its consumers into an application."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from switchyard import keys
from switchyard.bus.connection import Bus
from switchyard.bus.consumer import Consumer, HandlerRegistry
from switchyard.bus.inbox import INBOX_COLLECTION, Inbox
from switchyard.envelope import CATALOG, EventCatalog
from switchyard.metrics import Metrics
from switchyard.settings import ServiceSettings

log = logging.getLogger("switchyard.bus")


def bus_from_settings(app: web.Application) -> Bus:
    return bus_for(app[keys.SETTINGS], app[keys.METRICS])


def bus_for(settings: ServiceSettings, metrics: Metrics) -> Bus:
    """The process's :class:`Bus` as ``settings`` configure it (outside an aiohttp app too)."""
    return Bus(
        url=settings.amqp_url,
        exchange=settings.bus_exchange,
        service=settings.service_name,
        metrics=metrics,
        queue_prefix=settings.bus_queue_prefix,
        retry_delays=settings.bus_retry_delays,
        prefetch=settings.bus_prefetch,
        queue_expires_ms=settings.bus_queue_expires_ms,
        queue_type=settings.bus_queue_type,
        delivery_limit=settings.bus_delivery_limit,
        handler_timeout=settings.bus_handler_timeout,
    )


async def bus_context(app: web.Application) -> AsyncIterator[None]:
    """Connect the bus (with retries), expose it as ``app[keys.BUS]``, close it last."""
    bus = bus_from_settings(app)
    await bus.connect()
    app[keys.BUS] = bus
    app[keys.READINESS_CHECKS]["broker"] = bus.ping
    try:
        yield
    finally:
        await bus.close()


def consumers_context(
    registry_factory: Callable[[web.Application], HandlerRegistry],
    *,
    catalog: EventCatalog = CATALOG,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start a consumer per subscription; on shutdown stop consuming and drain in-flight work.

    ``registry_factory`` receives the app once its resources exist, so handlers can
    be bound to their dependencies there.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        bus = app[keys.BUS]
        settings = app[keys.SETTINGS]
        inbox = Inbox(app[keys.MONGO_DB][INBOX_COLLECTION], owner=uuid.uuid4().hex)
        consumers = [
            Consumer(bus, sub, inbox=inbox, catalog=catalog) for sub in registry_factory(app)
        ]
        for consumer in consumers:
            await consumer.start()

        async def stop_consuming(_: web.Application) -> None:
            for consumer in consumers:
                await consumer.stop(timeout=settings.shutdown_timeout)

        app.on_shutdown.append(stop_consuming)
        try:
            yield
        finally:
            for consumer in consumers:
                await consumer.stop(timeout=0)

    return context


__all__: list[Any] = ["bus_context", "consumers_context", "bus_for", "bus_from_settings"]

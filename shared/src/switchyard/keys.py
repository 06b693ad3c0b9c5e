"""Typed application keys for the resources the shared library wires up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.asynchronous.mongo_client import AsyncMongoClient

    from switchyard.bus.connection import Bus
    from switchyard.metrics import Metrics
    from switchyard.outbox import OutboxRelay
    from switchyard.settings import ServiceSettings

ReadinessCheck = Callable[[], Awaitable[None]]

SETTINGS: web.AppKey[ServiceSettings] = web.AppKey("switchyard.settings")
METRICS: web.AppKey[Metrics] = web.AppKey("switchyard.metrics")
READINESS_CHECKS = web.AppKey("switchyard.readiness", dict[str, ReadinessCheck])
MONGO_CLIENT: web.AppKey[AsyncMongoClient[dict[str, Any]]] = web.AppKey("switchyard.mongo_client")
MONGO_DB: web.AppKey[AsyncDatabase[dict[str, Any]]] = web.AppKey("switchyard.mongo_db")
BUS: web.AppKey[Bus] = web.AppKey("switchyard.bus")
OUTBOX_RELAY: web.AppKey[OutboxRelay] = web.AppKey("switchyard.outbox_relay")

"""Typed application keys for the resources the shared library wires up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.asynchronous.mongo_client import AsyncMongoClient

    from switchyard.bus.connection import Bus
    from switchyard.metrics import Metrics
    from switchyard.outbox import OutboxRelay
    from switchyard.settings import ServiceSettings

ReadinessCheck = Callable[[], Awaitable[None]]

SETTINGS = web.AppKey("switchyard.settings", "ServiceSettings")
METRICS = web.AppKey("switchyard.metrics", "Metrics")
READINESS_CHECKS = web.AppKey("switchyard.readiness", dict[str, ReadinessCheck])
MONGO_CLIENT = web.AppKey("switchyard.mongo_client", "AsyncMongoClient")
MONGO_DB = web.AppKey("switchyard.mongo_db", "AsyncDatabase")
BUS = web.AppKey("switchyard.bus", "Bus")
OUTBOX_RELAY = web.AppKey("switchyard.outbox_relay", "OutboxRelay")

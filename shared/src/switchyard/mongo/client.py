"""The service's ``AsyncMongoClient``: connect with retries, declare indexes, close."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from switchyard import keys
from switchyard.metrics import Metrics

log = logging.getLogger("switchyard.mongo")

Document = dict[str, Any]


@dataclass(frozen=True)
class Index:
    """An index a service declares; created at start-up (creation is idempotent)."""

    collection: str
    keys: Sequence[tuple[str, int]]
    unique: bool = False
    expire_after_seconds: int | None = None
    sparse: bool = False
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        kwargs: dict[str, Any] = dict(self.options)
        if self.unique:
            kwargs["unique"] = True
        if self.sparse:
            kwargs["sparse"] = True
        if self.expire_after_seconds is not None:
            kwargs["expireAfterSeconds"] = self.expire_after_seconds
        kwargs["name"] = self.name or "_".join(f"{k}_{d}" for k, d in self.keys)
        return IndexModel(list(self.keys), **kwargs)


def asc(*names: str) -> list[tuple[str, int]]:
    return [(name, ASCENDING) for name in names]


class _CommandTimer(monitoring.CommandListener):
    """Feeds ``db_operation_duration_seconds`` from PyMongo's command monitoring."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        return None

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.metrics.store_duration.labels(self.metrics.service, event.command_name).observe(
            event.duration_micros / 1e6
        )

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.metrics.store_duration.labels(self.metrics.service, event.command_name).observe(
            event.duration_micros / 1e6
        )


async def connect_mongo(
    url: str, *, metrics: Metrics | None = None, connect_timeout: float = 30.0
) -> AsyncMongoClient[Document]:
    """Connect and ping, retrying with backoff until ``connect_timeout`` runs out."""
    listeners = [_CommandTimer(metrics)] if metrics is not None else []
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=3000,
        connectTimeoutMS=3000,
        tz_aware=True,
        event_listeners=listeners,
    )
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(PyMongoError),
            wait=wait_exponential(multiplier=0.2, max=3),
            stop=stop_after_delay(connect_timeout),
            reraise=True,
        ):
            with attempt:
                await client.admin.command("ping")
    except BaseException:
        await client.close()
        raise
    return client


async def ensure_indexes(db: AsyncDatabase[Document], indexes: Sequence[Index]) -> None:
    """Create the declared indexes. An existing index on the same keys whose TTL or
    uniqueness differs from its declaration is dropped first: the code's declaration is
    the truth, and a store refuses to create an index that clashes with an existing one."""
    by_collection: dict[str, list[Index]] = {}
    for index in indexes:
        by_collection.setdefault(index.collection, []).append(index)
    for collection, declared in by_collection.items():
        await _drop_changed(db[collection], declared)
        await db[collection].create_indexes([index.model() for index in declared])


async def _drop_changed(collection: AsyncCollection[Document], declared: Sequence[Index]) -> None:
    existing = [index async for index in await collection.list_indexes()]
    for index in declared:
        wanted = [(name, int(direction)) for name, direction in index.keys]
        for found in existing:
            keys = [(name, int(direction)) for name, direction in dict(found["key"]).items()]
            if keys != wanted or found["name"] == "_id_":
                continue
            if (
                found.get("expireAfterSeconds") != index.expire_after_seconds
                or bool(found.get("unique")) != index.unique
            ):
                log.warning(
                    "replacing an index whose options changed",
                    extra={"collection": collection.name, "index": found["name"]},
                )
                await collection.drop_index(found["name"])


def mongo_context(
    indexes: Sequence[Index] = (),
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that opens the client, declares ``indexes`` and closes on exit."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        client = await connect_mongo(settings.mongo_url, metrics=app[keys.METRICS])
        db = client[settings.database_name]
        await ensure_indexes(db, indexes)
        app[keys.MONGO_CLIENT] = client
        app[keys.MONGO_DB] = db

        async def ping() -> None:
            await client.admin.command("ping")

        app[keys.READINESS_CHECKS]["database"] = ping
        log.info("connected to MongoDB", extra={"database": db.name})
        try:
            yield
        finally:
            await client.close()

    return context

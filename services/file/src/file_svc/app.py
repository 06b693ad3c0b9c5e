"""The one wiring place: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from file_svc import keys
from file_svc.adapters import grants, records, usage
from file_svc.adapters.grants import Grants, grant_indexes
from file_svc.adapters.image_pool import ImagePool
from file_svc.adapters.local_storage import LocalBlobStore
from file_svc.adapters.records import FileRecords, record_indexes, tombstone_expiry
from file_svc.adapters.s3_storage import S3BlobStore
from file_svc.adapters.spool import Spool
from file_svc.adapters.storage import BlobStore, MeasuredStore
from file_svc.adapters.usage import UsageLedger
from file_svc.deps import FileDeps
from file_svc.domain.links import LinkSigner
from file_svc.entrypoints.consumers import build_registry
from file_svc.entrypoints.http import add_routes
from file_svc.handlers import finish_thumbnails
from file_svc.metrics import FileMetrics
from file_svc.settings import FileSettings
from file_svc.sweeper import sweeper_context
from switchyard import keys as shared_keys
from switchyard.authn import authn_middleware, verifier_context
from switchyard.bus import bus_context, consumers_context, inbox_indexes
from switchyard.directory import UserDirectory
from switchyard.mongo import mongo_context
from switchyard.mongo.client import Index
from switchyard.outbox import outbox_context, outbox_indexes
from switchyard.revocation import revocation_context
from switchyard.web import new_app

USERS_COLLECTION = "file_users"  # the switchyard.directory read model
OUTBOX_COLLECTIONS = [records.COLLECTION]


def indexes(settings: FileSettings) -> list[Index]:
    return [
        *record_indexes(),
        *grant_indexes(),
        *outbox_indexes(OUTBOX_COLLECTIONS, [tombstone_expiry(settings.tombstone_days)]),
        *inbox_indexes(),
    ]


def storage_backend(settings: FileSettings) -> BlobStore:
    location = settings.s3
    if location is not None:
        return S3BlobStore(settings, location)
    return LocalBlobStore(Path(settings.storage))


def deps_context(settings: FileSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """Storage, the image pool and the stores, as one :class:`FileDeps`."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        db = app[shared_keys.MONGO_DB]
        backend = storage_backend(settings)
        storage = MeasuredStore(backend, app[keys.FILE_METRICS])
        await storage.start()
        if isinstance(backend, S3BlobStore) and settings.s3_create_bucket:
            await backend.ensure_bucket()
        spool = Spool(settings.spool_dir)
        await spool.start()
        images = ImagePool(settings.image_workers)
        relay = app[shared_keys.OUTBOX_RELAY]
        app[keys.DEPS] = FileDeps(
            settings=settings,
            records=FileRecords(db[records.COLLECTION]),
            usage=UsageLedger(db[usage.COLLECTION]),
            grants=Grants(db[grants.COLLECTION], db[grants.REVOKED_COLLECTION]),
            storage=storage,
            images=images,
            spool=spool,
            directory=UserDirectory(db[USERS_COLLECTION]),
            metrics=app[keys.FILE_METRICS],
            signer=LinkSigner(settings.signing_keys),
            notify=relay.notify,
        )
        app[shared_keys.READINESS_CHECKS]["storage"] = storage.check
        try:
            yield
        finally:
            # Thumbnails in the making use storage, the store and the pool: they end first.
            await finish_thumbnails(app[keys.DEPS], timeout=shutdown_time_left(app, settings))
            images.close()
            await storage.close()

    return context


async def _shutdown_began(app: web.Application) -> None:
    app[keys.SHUTDOWN_CLOCK].began = asyncio.get_running_loop().time()


def shutdown_time_left(app: web.Application, settings: FileSettings) -> float:
    """What is left of SHUTDOWN_TIMEOUT since shutdown began. aiohttp has already given the
    requests in flight up to SHUTDOWN_TIMEOUT to finish (a thumbnail requester still
    waiting among them): a second full timeout here would let the process run up to twice
    the time it advertises. All of it when shutdown never began (startup failed)."""
    began = app[keys.SHUTDOWN_CLOCK].began
    if began is None:
        return settings.shutdown_timeout
    spent = asyncio.get_running_loop().time() - began
    return max(0.0, settings.shutdown_timeout - spent)


def create_app(settings: FileSettings) -> web.Application:
    # Compressed request bodies are refused (415), never inflated: a 100 KiB gzip body
    # would otherwise become up to FILE_MAX_BYTES of work per request (a zip bomb).
    app = new_app(settings)
    app[keys.FILE_METRICS] = FileMetrics(app[shared_keys.METRICS])
    app.middlewares.append(authn_middleware())
    app[keys.SHUTDOWN_CLOCK] = keys.ShutdownClock()
    app.on_shutdown.append(_shutdown_began)
    app.cleanup_ctx.extend(
        [
            mongo_context(indexes(settings)),
            bus_context,
            outbox_context(OUTBOX_COLLECTIONS, expiry=[tombstone_expiry(settings.tombstone_days)]),
            verifier_context(),
            revocation_context(),  # revoked sessions refused within seconds
            deps_context(settings),
            sweeper_context(keys.SWEEPER, keys.DEPS),
            consumers_context(build_registry),
        ]
    )
    add_routes(app)
    return app

"""The sweeper: removes blobs of deleted files and whatever unfinished uploads left behind.

Each pass, in an order that makes a crash anywhere safe to repeat:

1. **deleted files** — blob and thumbnails deleted, quota released, grants dropped, then
   the record becomes a ``purged`` tombstone (only once its ``file.deleted`` event was
   relayed; until then the next pass repeats the idempotent steps);
2. **abandoned uploads** — records ``uploading`` whose heartbeat is older than the grace
   period (the process died, or the client vanished without the server noticing): the
   blob key (in case the commit happened), quota, and last the record;
3. **temporaries** — partial objects in the backend (local ``.part`` files, S3 multipart
   uploads) older than the grace period whose upload is not alive any more, and scratch
   files of image work.

Every replica runs one; passes are idempotent, so two replicas sweeping at once do the
same work twice at worst, never anything wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from pymongo.errors import PyMongoError

from file_svc.adapters.storage import StorageError
from file_svc.deps import FileDeps
from file_svc.domain.files import blob_key, thumbnail_key
from file_svc.settings import THUMBNAIL_SIZES
from switchyard.envelope import utcnow

log = logging.getLogger("file.sweeper")

BATCH = 200


@dataclass
class SweepReport:
    deleted: int = 0
    abandoned: int = 0
    temporaries: int = 0
    scratch: int = 0


class Sweeper:
    def __init__(self, deps: FileDeps) -> None:
        self.deps = deps
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self, *, grace: float | None = None) -> SweepReport:
        """One pass; ``grace`` overrides the setting (tests)."""
        deps = self.deps
        grace_seconds = deps.settings.orphan_grace if grace is None else grace
        now = utcnow()
        cutoff = now - timedelta(seconds=grace_seconds)
        report = SweepReport()

        for stored in await deps.records.deleted(BATCH):
            await self._remove_objects(stored.id)
            await deps.usage.release(stored.owner_id, stored.id)
            await deps.grants.forget_file(stored.id)
            await deps.records.mark_purged(stored.id, utcnow())
            report.deleted += 1

        for file_id, owner_id in await deps.records.stale_uploads(cutoff, BATCH):
            await self._remove_objects(file_id)
            await deps.usage.release(owner_id, file_id)
            await deps.records.abandon(file_id)
            report.abandoned += 1

        for temporary in await deps.storage.temporaries(cutoff.timestamp()):
            if await deps.records.live_upload(temporary.file_id, cutoff):
                continue  # a slow upload still going: its heartbeat is recent
            await deps.storage.discard(temporary)
            report.temporaries += 1

        report.scratch = await deps.spool.sweep(cutoff.timestamp())
        for kind, count in (
            ("deleted", report.deleted),
            ("abandoned", report.abandoned),
            ("temporary", report.temporaries + report.scratch),
        ):
            if count:
                deps.metrics.sweep(kind, count)  # type: ignore[arg-type]
        if report.deleted or report.abandoned or report.temporaries or report.scratch:
            log.info("swept", extra=report.__dict__)
        return report

    async def _remove_objects(self, file_id: str) -> None:
        storage = self.deps.storage
        await storage.delete(blob_key(file_id))
        for size in THUMBNAIL_SIZES:
            await storage.delete(thumbnail_key(file_id, size))

    async def run(self) -> None:
        interval = self.deps.settings.sweep_interval
        while True:
            try:
                await self.sweep_once()
            except (StorageError, PyMongoError, OSError) as error:
                log.warning("sweep failed; retrying next time", extra={"error": repr(error)})
            await asyncio.sleep(interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="file-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def sweeper_context(
    key: web.AppKey[Sweeper], deps_key: web.AppKey[FileDeps]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        sweeper = Sweeper(app[deps_key])
        app[key] = sweeper
        sweeper.start()
        try:
            yield
        finally:
            await sweeper.stop()

    return context

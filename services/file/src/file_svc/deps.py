"""The dependencies of the file service's commands, built once in ``create_app``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from file_svc.adapters.grants import Grants
from file_svc.adapters.image_pool import ImagePool
from file_svc.adapters.records import FileRecords
from file_svc.adapters.spool import Spool
from file_svc.adapters.storage import BlobStore
from file_svc.adapters.usage import UsageLedger
from file_svc.domain.links import LinkSigner
from file_svc.metrics import FileMetrics
from file_svc.settings import FileSettings
from switchyard.directory import UserDirectory


@dataclass(frozen=True)
class FileDeps:
    """What the commands of the file service work with (built once in ``create_app``)."""

    settings: FileSettings
    records: FileRecords
    usage: UsageLedger
    grants: Grants
    storage: BlobStore
    images: ImagePool
    spool: Spool
    directory: UserDirectory
    metrics: FileMetrics
    signer: LinkSigner
    notify: Callable[[], None]  # wakes the outbox relay after a write with events
    # Thumbnails being made, by storage key: concurrent requests share one (in-process).
    thumbnail_work: dict[str, asyncio.Task[bytes]] = field(default_factory=dict)

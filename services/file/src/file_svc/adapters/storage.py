"""Where blobs live: one small interface, two backends (a local directory, S3).

Keys are built by the service from its own ids (``domain.files.blob_key``), never from
anything a client sent. An upload is written through a :class:`BlobWriter` — bytes go
to a temporary object that becomes visible under its key only on ``commit`` — so a
reader never sees half a file and an aborted or crashed upload leaves only a temporary,
which :meth:`BlobStore.temporaries` finds again for the sweeper.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from file_svc.metrics import FileMetrics

T = TypeVar("T")


class StorageError(Exception):
    """The backend failed (I/O error, S3 error): the request gets a 503, never a lie."""


class BlobMissing(StorageError):
    """The key has no object (a blob swept away, or never committed)."""


@dataclass(frozen=True)
class Temporary:
    """What an unfinished upload left in the backend: the file it was for, and a handle
    only its backend understands."""

    file_id: str
    handle: Any
    started: float  # unix seconds the temporary was last written (local) or created (S3)


class BlobWriter(Protocol):
    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> None:
        """Make everything written visible under the key, durably."""
        ...

    async def abort(self) -> None:
        """Remove everything written; idempotent."""
        ...


class BlobStore(Protocol):
    backend: str  # "local" or "s3", for metrics and logs

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise unless the backend answers (readiness)."""
        ...

    def writer(self, key: str, *, file_id: str) -> BlobWriter: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``start``..``end`` (inclusive; None = to the end) in chunks."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object in one go (thumbnails)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """A small object, or None when there is none."""
        ...

    async def download(self, key: str, path: Path) -> None:
        """Copy the object into a local file (for image work)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def temporaries(self, older_than: float) -> list[Temporary]:
        """Unfinished uploads not written to since ``older_than`` (unix seconds)."""
        ...

    async def discard(self, temporary: Temporary) -> None: ...


class MeasuredStore:
    """A :class:`BlobStore` that records latency and errors of every backend call."""

    def __init__(self, inner: BlobStore, metrics: FileMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.backend = inner.backend

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except BlobMissing:
            self.metrics.storage_call(self.backend, operation, time.perf_counter() - started)
            raise
        except Exception:
            self.metrics.storage_error(self.backend, operation)
            raise
        self.metrics.storage_call(self.backend, operation, time.perf_counter() - started)
        return result

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def check(self) -> None:
        await self._timed("check", self.inner.check)

    def writer(self, key: str, *, file_id: str) -> BlobWriter:
        return _MeasuredWriter(self, self.inner.writer(key, file_id=file_id))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        first = True
        try:
            async for chunk in self.inner.read(key, start, end):
                if first:
                    self.metrics.storage_call(self.backend, "read", time.perf_counter() - started)
                    first = False
                yield chunk
        except BlobMissing:
            raise
        except Exception:
            self.metrics.storage_error(self.backend, "read")
            raise

    async def put(self, key: str, data: bytes) -> None:
        await self._timed("put", lambda: self.inner.put(key, data))

    async def get(self, key: str) -> bytes | None:
        return await self._timed("get", lambda: self.inner.get(key))

    async def download(self, key: str, path: Path) -> None:
        await self._timed("download", lambda: self.inner.download(key, path))

    async def delete(self, key: str) -> None:
        await self._timed("delete", lambda: self.inner.delete(key))

    async def exists(self, key: str) -> bool:
        return await self._timed("exists", lambda: self.inner.exists(key))

    async def temporaries(self, older_than: float) -> list[Temporary]:
        return await self._timed("list", lambda: self.inner.temporaries(older_than))

    async def discard(self, temporary: Temporary) -> None:
        await self._timed("discard", lambda: self.inner.discard(temporary))


class _MeasuredWriter:
    def __init__(self, store: MeasuredStore, inner: BlobWriter) -> None:
        self.store = store
        self.inner = inner

    async def write(self, chunk: bytes) -> None:
        await self.store._timed("write", lambda: self.inner.write(chunk))

    async def commit(self) -> None:
        await self.store._timed("commit", self.inner.commit)

    async def abort(self) -> None:
        await self.store._timed("abort", self.inner.abort)

"""Blobs in a local directory (the default; ``.var/files`` under `make run`).

Layout under the root: ``blobs/ab/cd/<file id>`` and ``thumbs/ab/cd/<file id>/<size>.webp``
(the two levels spread ids over 65,536 directories), ``tmp/<file id>.<random>.part`` for
uploads in progress. A commit is fsync of the file, an atomic rename into place and an
fsync of the directory, so after a crash a key holds either nothing or the whole file.
Blocking file calls run in threads; the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from file_svc.adapters.storage import BlobMissing, StorageError, Temporary

CHUNK_BYTES = 1024 * 1024
_FILE_ID_IN_KEY = re.compile(r"f_[0-9a-f]{32}")


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / "tmp"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root or ".." in key.split("/"):
            raise ValueError(f"key escapes the storage root: {key!r}")
        return path

    async def start(self) -> None:
        def prepare() -> None:
            for directory in (self.root, self.tmp, self.root / "blobs", self.root / "thumbs"):
                directory.mkdir(parents=True, exist_ok=True)

        await asyncio.to_thread(prepare)

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        def probe() -> None:
            if not os.access(self.tmp, os.W_OK):
                raise StorageError(f"{self.tmp} is not writable")

        await asyncio.to_thread(probe)

    def writer(self, key: str, *, file_id: str) -> LocalWriter:
        return LocalWriter(self, self._path(key), file_id)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb", buffering=0)
        except FileNotFoundError:
            raise BlobMissing(key) from None
        except OSError as error:
            raise StorageError(f"cannot open {key}: {error}") from error
        try:
            position = start
            last = end if end is not None else os.fstat(handle.fileno()).st_size - 1
            while position <= last:
                size = min(CHUNK_BYTES, last - position + 1)
                chunk = await asyncio.to_thread(os.pread, handle.fileno(), size, position)
                if not chunk:
                    break
                position += len(chunk)
                yield chunk
        finally:
            handle.close()

    async def put(self, key: str, data: bytes) -> None:
        owner = _FILE_ID_IN_KEY.search(key)
        writer = self.writer(key, file_id=owner.group(0) if owner else "object")
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None

    async def download(self, key: str, path: Path) -> None:
        try:
            await asyncio.to_thread(shutil.copyfile, self._path(key), path)
        except FileNotFoundError:
            raise BlobMissing(key) from None

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            # Leave empty shard directories: they are reused and cost nothing.

        await asyncio.to_thread(remove)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def temporaries(self, older_than: float) -> list[Temporary]:
        def scan() -> list[Temporary]:
            found = []
            with os.scandir(self.tmp) as entries:
                for entry in entries:
                    if not entry.name.endswith(".part"):
                        continue
                    try:
                        written = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue  # finished meanwhile
                    if written < older_than:
                        found.append(Temporary(entry.name.split(".", 1)[0], entry.path, written))
            return found

        return await asyncio.to_thread(scan)

    async def discard(self, temporary: Temporary) -> None:
        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary.handle)

        await asyncio.to_thread(remove)


class LocalWriter:
    """Writes ``tmp/<file id>.<random>.part``; commit renames it to the key's path."""

    def __init__(self, store: LocalBlobStore, target: Path, file_id: str) -> None:
        self.store = store
        self.target = target
        self.temporary = store.tmp / f"{file_id}.{secrets.token_hex(6)}.part"
        self._handle: IO[bytes] | None = None
        self._done = False

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise StorageError("write after commit or abort")
        if self._handle is None:
            self._handle = await asyncio.to_thread(self._open)
        try:
            await asyncio.to_thread(self._handle.write, chunk)
        except OSError as error:
            raise StorageError(self._describe(error)) from error

    def _open(self) -> IO[bytes]:
        return open(self.temporary, "xb")  # noqa: SIM115 - closed in commit/abort

    def _describe(self, error: OSError) -> str:
        if error.errno == errno.ENOSPC:
            return "the storage volume is full"
        return f"writing the upload failed: {error.strerror}"

    async def commit(self) -> None:
        if self._done:
            raise StorageError("commit after commit or abort")
        if self._handle is None:
            self._handle = await asyncio.to_thread(self._open)
        handle = self._handle

        def finish() -> None:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            self.target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.temporary, self.target)
            _fsync_directory(self.target.parent)

        try:
            await asyncio.to_thread(finish)
        except OSError as error:
            await self.abort()
            raise StorageError(self._describe(error)) from error
        self._done = True

    async def abort(self) -> None:
        self._done = True
        handle, self._handle = self._handle, None

        def remove() -> None:
            if handle is not None:
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temporary)

        await asyncio.to_thread(remove)

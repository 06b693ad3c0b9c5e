"""One upload, from the first byte of the file part to the ``ready`` record.

1. A record ``uploading`` is written first (owner, name, heartbeat), so that whatever a
   crash leaves behind in storage can be found and removed by the sweeper.
2. The first 8 KiB are held back until the content's type is known (sniffed, checked
   against the name, the declared type and the purpose's allow-list) — nothing of a
   refused file is ever stored.
3. Everything else streams on: other files straight into the storage backend's
   temporary object (hashed on the way), images into a local scratch file that Pillow
   turns into the stored, metadata-free image. The size limit and the quota are checked
   with every chunk: a file over either is refused as soon as it is, not after.
4. On success the blob is committed, the bytes are counted against the quota (one
   guarded update) and the record becomes ``ready`` together with its ``file.uploaded``
   event. On any failure everything written is removed at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pymongo.errors import DuplicateKeyError

from file_svc.adapters.storage import BlobWriter, StorageError
from file_svc.deps import FileDeps
from file_svc.domain.errors import EmptyFile, FileRejected, QuotaExceeded, TooLarge
from file_svc.domain.files import Purpose, StoredFile, blob_key, new_file_id
from file_svc.domain.images import sanitize_image
from file_svc.domain.types import (
    SNIFF_BYTES,
    FileType,
    TextStream,
    check_claims,
    check_purpose,
    sniff,
)
from file_svc.handlers import delete_file
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.file import FileUploaded

log = logging.getLogger("file.uploads")

COPY_CHUNK = 1024 * 1024


class AccountDeleted(FileRejected):
    slug = "account-deleted"


class KeyInUse(FileRejected):
    """An upload under the same Idempotency-Key is still running."""

    slug = "idempotency-key-in-use"


class KeyReused(FileRejected):
    """The Idempotency-Key was used for a different file."""

    slug = "idempotency-key-reused"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size:,} bytes"


class Upload:
    """Receives one file part; ``begin`` → ``feed``… → ``end_of_stream`` → ``finish``,
    or ``fail`` at any point."""

    replayed = False

    def __init__(
        self,
        deps: FileDeps,
        *,
        owner_id: str,
        filename: str,
        declared_type: str | None,
        idempotency_key: str | None = None,
    ) -> None:
        self.deps = deps
        self.idempotency_key = idempotency_key
        self.owner_id = owner_id
        self.filename = filename
        self.declared_type = declared_type
        self.file_id = new_file_id()
        self.started = utcnow()
        self.purpose: Purpose | None = None
        self.kind: FileType | None = None
        self.size = 0
        self.quota_left = 0
        self._head = bytearray()
        self._hasher = hashlib.sha256()  # of what is stored
        self._received = hashlib.sha256()  # of what came in, when that differs (images)
        self._writer: BlobWriter | None = None
        self._image_in: Path | None = None
        self._image_out: Path | None = None
        self._image_handle: IO[bytes] | None = None
        self._text: TextStream | None = None  # text files: checked to the last byte
        self._output_size = 0
        self._recorded = False
        self._committed = False
        self._handed_over = False  # a file (deleted at once) now: nothing left to undo
        self._last_heartbeat = time.monotonic()

    async def begin(self) -> None:
        settings = self.deps.settings
        used = await self.deps.usage.used(self.owner_id)
        self.quota_left = settings.quota_bytes - used
        if self.quota_left <= 0:
            raise QuotaExceeded(
                f"Your storage quota of {_mib(settings.quota_bytes)} is used up.",
                limit=settings.quota_bytes,
            )
        try:
            await self.deps.records.start_upload(
                self.file_id,
                owner_id=self.owner_id,
                filename=self.filename,
                now=self.started,
                idempotency_key=self.idempotency_key,
            )
        except DuplicateKeyError:
            raise KeyInUse(
                "An upload with this Idempotency-Key is still running; retry shortly."
            ) from None
        self._recorded = True

    def choose_purpose(self, purpose: Purpose) -> None:
        self.purpose = purpose
        if self.kind is not None:
            check_purpose(self.kind, purpose)

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._check_limits()
        if self.kind is None:
            self._head += chunk
            if len(self._head) < SNIFF_BYTES:
                return
            await self._decide(complete=False)
            chunk, self._head = bytes(self._head), bytearray()
        await self._sink(chunk)
        if time.monotonic() - self._last_heartbeat > self.deps.settings.upload_heartbeat:
            self._last_heartbeat = time.monotonic()
            if not await self.deps.records.heartbeat(self.file_id, utcnow()):
                raise StorageError("the upload was given up as abandoned")

    def _check_limits(self) -> None:
        settings = self.deps.settings
        if self.size > settings.max_bytes:
            raise TooLarge(
                f"The file is larger than the limit of {_mib(settings.max_bytes)}.",
                limit=settings.max_bytes,
            )
        if self.size > self.quota_left:
            raise QuotaExceeded(
                f"The file does not fit in your remaining storage quota "
                f"({_mib(max(self.quota_left, 0))} of {_mib(settings.quota_bytes)}).",
                limit=max(self.quota_left, 0),
            )

    async def end_of_stream(self) -> None:
        if self.size == 0:
            raise EmptyFile("The file is empty.")
        if self.kind is None:
            await self._decide(complete=True)
            head, self._head = bytes(self._head), bytearray()
            await self._sink(head)
        if self._text is not None:
            self._text.feed(b"", final=True)  # a character cut off at the very end

    async def _decide(self, *, complete: bool) -> None:
        kind = sniff(bytes(self._head), self.filename, complete=complete)
        check_claims(kind, self.filename, self.declared_type)
        if self.purpose is not None:
            check_purpose(kind, self.purpose)
        self.kind = kind
        if kind.is_image:
            self._image_in = self.deps.spool.path(self.file_id, "in")
            self._image_handle = await asyncio.to_thread(self._image_in.open, "xb")
        else:
            if kind.is_text:
                self._text = TextStream()
            self._writer = self.deps.storage.writer(blob_key(self.file_id), file_id=self.file_id)

    async def _sink(self, data: bytes) -> None:
        if self._image_handle is not None:
            self._received.update(data)
            await asyncio.to_thread(self._image_handle.write, data)
            return
        assert self._writer is not None
        if self._text is not None:
            self._text.feed(data)
        self._hasher.update(data)
        await self._writer.write(data)

    async def finish(self) -> StoredFile:
        """Commit the blob, count it, and make the record ``ready`` with its event."""
        deps = self.deps
        kind, purpose = self.kind, self.purpose
        assert kind is not None and purpose is not None, "finish after end_of_stream and purpose"
        check_purpose(kind, purpose)
        if kind.is_image:
            await self._store_clean_image(kind)
        else:
            assert self._writer is not None
            await self._writer.commit()
        self._committed = True
        stored_size = self._stored_size
        owner = await deps.directory.get(self.owner_id)
        if owner is not None and owner.deleted:
            raise AccountDeleted("This account has been deleted.")
        if not await deps.usage.reserve(
            self.owner_id, self.file_id, stored_size, quota=deps.settings.quota_bytes
        ):
            raise QuotaExceeded(
                f"The file does not fit in your storage quota of "
                f"{_mib(deps.settings.quota_bytes)}.",
                limit=deps.settings.quota_bytes,
            )
        stored = StoredFile(
            id=self.file_id,
            owner_id=self.owner_id,
            purpose=purpose,
            filename=self.filename,
            content_type=kind.content_type,
            size=stored_size,
            sha256=self._hasher.hexdigest(),
            created_at=self.started,
        )
        event = new_envelope(
            FileUploaded(
                file_id=stored.id,
                owner_id=stored.owner_id,
                purpose=stored.purpose,
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
                filename=stored.filename,
                uploaded_at=stored.created_at,
            ),
            service="file",
            subject=stored.id,
        )
        received = self._received if kind.is_image else self._hasher
        if not await deps.records.finish_upload(
            stored, event, received_sha256=received.hexdigest()
        ):
            await deps.usage.release(self.owner_id, self.file_id)
            raise StorageError("the upload was given up as abandoned before it finished")
        self._recorded = False  # it is a file now, not an upload to clean up
        deps.notify()
        await deps.spool.remove(self._image_in, self._image_out)
        owner = await deps.directory.get(self.owner_id)
        if owner is not None and owner.deleted:
            # auth.user.deleted was handled between the check above and ``ready``: it
            # deleted the account's ready files, and this one was not ready yet. The
            # deletion marks the directory first and this check comes after ``ready``,
            # so one of the two always sees the other. Deleted like the others (with
            # its file.deleted event); the sweeper removes the blob and the quota.
            await delete_file(self.file_id, self.owner_id, deps=deps)
            self._handed_over = True  # its blob and quota are the sweeper's now
            raise AccountDeleted("This account has been deleted.")
        return stored

    @property
    def _stored_size(self) -> int:
        return self._output_size if self.kind is not None and self.kind.is_image else self.size

    async def _store_clean_image(self, kind: FileType) -> None:
        deps = self.deps
        assert self._image_handle is not None and self._image_in is not None
        handle, self._image_handle = self._image_handle, None
        await asyncio.to_thread(handle.close)
        self._image_out = deps.spool.path(self.file_id, "out")
        await deps.images.run(
            sanitize_image,
            self._image_in,
            self._image_out,
            kind,
            max_pixels=deps.settings.image_max_pixels,
            jpeg_quality=deps.settings.jpeg_quality,
        )
        self._writer = deps.storage.writer(blob_key(self.file_id), file_id=self.file_id)
        self._output_size = 0
        with self._image_out.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, COPY_CHUNK):
                self._hasher.update(chunk)
                self._output_size += len(chunk)
                await self._writer.write(chunk)
        await self._writer.commit()

    async def fail(self) -> None:
        """Remove whatever this upload wrote. Never raises: what cannot be removed now is
        left to the sweeper (and logged)."""
        deps = self.deps
        if self._handed_over:
            return
        steps: list[tuple[str, Callable[[], object]]] = []
        if self._image_handle is not None:
            handle, self._image_handle = self._image_handle, None
            steps.append(("close scratch file", lambda: asyncio.to_thread(handle.close)))
        if self._writer is not None and not self._committed:
            steps.append(("abort the temporary object", self._writer.abort))
        if self._committed:
            key = blob_key(self.file_id)
            steps.append(
                ("release the quota", lambda: deps.usage.release(self.owner_id, self.file_id))
            )
            steps.append(("delete the blob", lambda: deps.storage.delete(key)))
        steps.append(
            ("remove scratch files", lambda: deps.spool.remove(self._image_in, self._image_out))
        )
        if self._recorded:
            steps.append(("forget the upload", lambda: deps.records.abandon(self.file_id)))
        for what, step in steps:
            try:
                await step()  # type: ignore[misc]
            except (StorageError, OSError) as error:
                log.warning(
                    "cleaning up a failed upload: could not %s; the sweeper will",
                    what,
                    extra={"file_id": self.file_id, "error": repr(error)},
                )
            except Exception:  # noqa: BLE001 - the store may fail too; the sweeper retries
                log.exception(
                    "cleaning up a failed upload: could not %s; the sweeper will",
                    what,
                    extra={"file_id": self.file_id},
                )


class Replay(Upload):
    """The same upload again under an Idempotency-Key whose file exists: the body is read
    and hashed, not stored; the same file, name and purpose answer with the original."""

    replayed = True

    def __init__(
        self,
        deps: FileDeps,
        *,
        owner_id: str,
        filename: str,
        original: StoredFile,
        original_sha256: str | None,
    ) -> None:
        super().__init__(deps, owner_id=owner_id, filename=filename, declared_type=None)
        self.original = original
        self.original_sha256 = original_sha256

    async def begin(self) -> None:
        self.quota_left = self.deps.settings.max_bytes  # nothing is stored: only the size limit

    def choose_purpose(self, purpose: Purpose) -> None:
        self.purpose = purpose

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._check_limits()
        self._received.update(chunk)

    async def end_of_stream(self) -> None:
        if self.size == 0:
            raise EmptyFile("The file is empty.")

    async def finish(self) -> StoredFile:
        same = (
            self._received.hexdigest() == self.original_sha256
            and self.filename == self.original.filename
            and self.purpose == self.original.purpose
        )
        if not same:
            raise KeyReused("This Idempotency-Key was used to upload a different file.")
        return self.original

    async def fail(self) -> None:
        return None  # nothing was written

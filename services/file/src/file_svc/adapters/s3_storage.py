"""Blobs in an S3-compatible bucket (AWS S3, MinIO, …) through aiobotocore.

``FILE_STORAGE=s3://bucket/prefix``; keys are ``<prefix>blobs/…`` and ``<prefix>thumbs/…``.
An upload up to one part (``S3_PART_BYTES``, 8 MiB) is kept in memory and sent with one
PUT on commit; a larger one becomes a multipart upload — one part in memory being filled
while the previous one is sent — completed on commit (only then is the object visible)
and aborted on failure. Multipart uploads a crash left behind are what
:meth:`temporaries` lists for the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from file_svc.adapters.storage import BlobMissing, StorageError, Temporary
from file_svc.settings import FileSettings, S3Location

CHUNK_BYTES = 1024 * 1024
_MISSING = ("NoSuchKey", "404", "NotFound")


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3BlobStore:
    backend = "s3"

    def __init__(self, settings: FileSettings, location: S3Location) -> None:
        self.settings = settings
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.part_bytes = settings.s3_part_bytes
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StorageError("the S3 client is not started")
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def start(self) -> None:
        settings = self.settings
        config = AioConfig(
            # Plain S3 semantics every S3-compatible server understands (MinIO, Ceph…).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=50,
            s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
        )
        secret = settings.aws_secret_access_key
        token = settings.aws_session_token
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.aws_region,
                aws_access_key_id=settings.aws_access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret else None,
                aws_session_token=token.get_secret_value() if token else None,
                config=config,
            )
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def check(self) -> None:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"bucket {self.bucket} unreachable: {error}") from error

    def writer(self, key: str, *, file_id: str) -> S3Writer:
        return S3Writer(self, self._key(key))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        options: dict[str, Any] = {}
        if start or end is not None:
            options["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = await self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), **options
            )
        except ClientError as error:
            if _code(error) in _MISSING:
                raise BlobMissing(key) from None
            raise StorageError(f"reading {key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"reading {key} failed: {error}") from error
        async with response["Body"] as body:
            try:
                while chunk := await body.read(CHUNK_BYTES):
                    yield chunk
            except (BotoCoreError, OSError) as error:
                raise StorageError(f"reading {key} broke off: {error}") from error

    async def put(self, key: str, data: bytes) -> None:
        try:
            await self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"storing {key} failed: {error}") from error

    async def get(self, key: str) -> bytes | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise StorageError(f"reading {key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"reading {key} failed: {error}") from error

    async def download(self, key: str, path: Path) -> None:
        with path.open("wb") as target:
            async for chunk in self.read(key):
                await asyncio.to_thread(target.write, chunk)

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"deleting {key} failed: {error}") from error

    async def exists(self, key: str) -> bool:
        try:
            await self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _code(error) in _MISSING:
                return False
            raise StorageError(f"checking {key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"checking {key} failed: {error}") from error
        return True

    async def temporaries(self, older_than: float) -> list[Temporary]:
        found = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "blobs/"):
                for upload in page.get("Uploads", []):
                    started = upload["Initiated"].timestamp()
                    if started < older_than:
                        file_id = str(upload["Key"]).rsplit("/", 1)[-1]
                        found.append(
                            Temporary(file_id, (upload["Key"], upload["UploadId"]), started)
                        )
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"listing unfinished uploads failed: {error}") from error
        return found

    async def discard(self, temporary: Temporary) -> None:
        key, upload_id = temporary.handle
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as error:
            if _code(error) != "NoSuchUpload":
                raise StorageError(f"aborting an upload of {key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"aborting an upload of {key} failed: {error}") from error

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (compose with MinIO, tests)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            await self.client.create_bucket(Bucket=self.bucket)


class S3Writer:
    def __init__(self, store: S3BlobStore, key: str) -> None:
        self.store = store
        self.key = key
        self.chunks: list[bytes] = []  # the part being filled
        self.buffered = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.sending: asyncio.Task[None] | None = None
        self.finished = False

    @property
    def client(self) -> Any:
        return self.store.client

    async def write(self, chunk: bytes) -> None:
        if self.finished:
            raise StorageError("write after commit or abort")
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        part_bytes = self.store.part_bytes
        while self.buffered >= part_bytes:
            joined = b"".join(self.chunks)
            part, rest = joined[:part_bytes], joined[part_bytes:]
            del joined
            self.chunks = [rest] if rest else []
            self.buffered = len(rest)
            await self._send(part)

    def _take_buffered(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data

    async def _send(self, part: bytes) -> None:
        try:
            if self.upload_id is None:
                created = await self.client.create_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key
                )
                self.upload_id = str(created["UploadId"])
            await self._wait_sent()  # at most one part in flight beside the one filling
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"uploading {self.key} failed: {error}") from error
        number = len(self.parts) + 1
        self.parts.append({"PartNumber": number})
        self.sending = asyncio.create_task(self._upload_part(number, part))

    async def _upload_part(self, number: int, part: bytes) -> None:
        response = await self.client.upload_part(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=part,
        )
        self.parts[number - 1]["ETag"] = response["ETag"]

    async def _wait_sent(self) -> None:
        if self.sending is not None:
            sending, self.sending = self.sending, None
            await sending

    async def commit(self) -> None:
        if self.finished:
            raise StorageError("commit after commit or abort")
        try:
            if self.upload_id is None:
                await self.client.put_object(
                    Bucket=self.store.bucket, Key=self.key, Body=self._take_buffered()
                )
            else:
                if self.buffered:
                    await self._send(self._take_buffered())
                await self._wait_sent()
                await self.client.complete_multipart_upload(
                    Bucket=self.store.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
        except (ClientError, BotoCoreError, StorageError) as error:
            await self.abort()
            raise StorageError(f"storing {self.key} failed: {error}") from error
        self.finished = True

    async def abort(self) -> None:
        self.finished = True
        self.chunks.clear()
        self.buffered = 0
        if self.sending is not None:
            self.sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError, BotoCoreError):
                await self.sending
            self.sending = None
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            try:
                await self.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=upload_id
                )
            except (ClientError, BotoCoreError) as error:
                # The sweeper aborts it later (it is listed as a temporary).
                raise StorageError(f"aborting {self.key} failed: {error}") from error

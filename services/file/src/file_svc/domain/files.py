"""A stored file as the service knows it, and the names derived from it (DESIGN §5 file)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from switchyard.envelope import format_time

Purpose = Literal["avatar", "cover", "portfolio", "attachment"]
PURPOSES: tuple[Purpose, ...] = ("avatar", "cover", "portfolio", "attachment")
Status = Literal["uploading", "ready", "deleted", "purged"]

_FILE_ID = re.compile(r"f_[0-9a-f]{32}")


def new_file_id() -> str:
    """``f_`` + 32 hex digits: a UUIDv7 layout (48-bit millisecond time, then random), so
    ids sort by creation time and index well."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"f_{value:032x}"


def is_file_id(value: str) -> bool:
    """The whole value is an id (``fullmatch``: ``$`` would also accept a trailing newline)."""
    return _FILE_ID.fullmatch(value) is not None


def _shard(file_id: str) -> str:
    # Ids start with a timestamp, so a hash spreads them: 65,536 directories (or S3
    # prefixes), none hot. Only our own id goes into a key, never user input.
    digest = hashlib.sha256(file_id.encode()).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}"


def blob_key(file_id: str) -> str:
    if not is_file_id(file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return f"blobs/{_shard(file_id)}/{file_id}"


def thumbnail_key(file_id: str, size: int) -> str:
    if not is_file_id(file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return f"thumbs/{_shard(file_id)}/{file_id}/{size}.webp"


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner_id: str
    purpose: Purpose
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    status: Status = "ready"
    thumbnails: tuple[int, ...] = ()

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    def view(self) -> dict[str, Any]:
        """The metadata object of DESIGN §5."""
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "purpose": self.purpose,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": format_time(self.created_at),
        }

"""Events the file service publishes (through its outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard.envelope import event_type, examples

Purpose = Literal["avatar", "cover", "portfolio", "attachment"]
FILE_ID = "f_019c3a81aa0b4c1d8e2f3a4b5c6d7e8f"
OWNER_ID = "019c3a7e5b2f4d1e8a6b0c9d2e4f6a8b"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FileFacts(_Data):
    file_id: str
    owner_id: str
    purpose: Purpose
    content_type: str
    size: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@event_type("file.uploaded")
class FileUploaded(_FileFacts):
    """A file was stored and validated; its owner may attach or share it."""

    model_config = examples(
        {
            "file_id": FILE_ID,
            "owner_id": OWNER_ID,
            "purpose": "attachment",
            "content_type": "image/png",
            "size": 48213,
            "sha256": SHA256,
            "filename": "floor-plan.png",
            "uploaded_at": "2026-03-01T12:00:00Z",
        }
    )

    filename: str
    uploaded_at: datetime


@event_type("file.deleted")
class FileDeleted(_FileFacts):
    """A file was deleted (by its owner, or because the owner's account was deleted)."""

    model_config = examples(
        {
            "file_id": FILE_ID,
            "owner_id": OWNER_ID,
            "purpose": "attachment",
            "content_type": "image/png",
            "size": 48213,
            "sha256": SHA256,
            "deleted_at": "2026-03-02T08:00:00Z",
        }
    )

    deleted_at: datetime

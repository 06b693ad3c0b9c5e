"""Typed settings of the file service (DESIGN §6), validated at start."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from switchyard.settings import ServiceSettings, credential, port_setting

MIB = 1024 * 1024
THUMBNAIL_SIZES = (64, 256, 1024)
MAX_LINK_SECONDS = 7 * 86400  # DESIGN §5: a shared link lives at most 7 days
_DEV_URL_SECRET = "development-only-file-url-secret-not-for-production"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"


class FileSettings(ServiceSettings):
    service_name: str = "file"
    port: int = port_setting("file")

    # Where blobs live: a directory (created if missing) or s3://bucket/prefix.
    storage: str = Field(".var/files", min_length=1, validation_alias="FILE_STORAGE")
    s3_endpoint_url: str | None = Field(None, validation_alias="S3_ENDPOINT_URL")
    # The standard AWS_* variables; unset means botocore's own chain (instance role, IRSA …).
    aws_access_key_id: str | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = credential("AWS_SECRET_ACCESS_KEY")
    aws_session_token: SecretStr | None = credential("AWS_SESSION_TOKEN")
    aws_region: str = Field("us-east-1", validation_alias="AWS_REGION")
    # Parts of an S3 multipart upload; each is buffered in memory while it is sent (S3's
    # minimum part is 5 MiB). Smaller files go up in one PUT.
    s3_part_bytes: int = Field(8 * MIB, ge=5 * MIB, le=512 * MIB, validation_alias="S3_PART_BYTES")

    # Create the bucket at start when it is missing (compose with MinIO; off for real S3).
    s3_create_bucket: bool = Field(False, validation_alias="S3_CREATE_BUCKET")
    # Scratch files for image work (any backend); local disk, not memory.
    spool_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "switchyard-file-spool",
        validation_alias="FILE_SPOOL_DIR",
    )

    max_bytes: int = Field(25 * MIB, ge=1, validation_alias="FILE_MAX_BYTES")
    quota_bytes: int = Field(1024 * MIB, ge=1, validation_alias="FILE_QUOTA_BYTES")

    # HMAC keys of shared links, comma-separated: the first signs, every one verifies, so a
    # rotation (new,old) keeps links signed with the old key working until they expire.
    url_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(_DEV_URL_SECRET)], validation_alias="FILE_URL_SECRET"
    )
    # Base URL put in front of shared links (e.g. https://api.example.com); unset → the
    # link is the path, relative to the gateway the client called.
    public_url: str | None = Field(None, validation_alias="FILE_PUBLIC_URL")

    # Images: decoded pixels above this are refused as a decompression bomb (422).
    image_max_pixels: int = Field(40_000_000, ge=1, validation_alias="IMAGE_MAX_PIXELS")
    # Threads decoding and encoding images (Pillow releases the GIL while it works); more
    # requests than this wait for a free one.
    image_workers: int = Field(2, ge=1, le=32, validation_alias="IMAGE_WORKERS")
    jpeg_quality: int = Field(90, ge=50, le=100, validation_alias="IMAGE_JPEG_QUALITY")

    # The sweeper removes deleted blobs and what crashed uploads left behind.
    sweep_interval: float = Field(60.0, gt=0, validation_alias="FILE_SWEEP_INTERVAL")
    # An upload that has not written anything for this long is considered dead.
    orphan_grace: float = Field(3600.0, gt=0, validation_alias="FILE_ORPHAN_GRACE_SECONDS")
    # A running upload says it is alive this often (must be well under the grace period).
    upload_heartbeat: float = Field(60.0, gt=0, validation_alias="FILE_UPLOAD_HEARTBEAT_SECONDS")
    # An upload whose client sends nothing for this long is ended (408): a stalled
    # connection (a slowloris) does not hold an upload, its record and a socket forever.
    upload_idle: float = Field(60.0, gt=0, validation_alias="FILE_UPLOAD_IDLE_SECONDS")
    # Deleted files' records are kept this long after their blob is gone.
    tombstone_days: int = Field(30, ge=1, validation_alias="FILE_TOMBSTONE_DAYS")

    @field_validator("url_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("url_secrets")
    @classmethod
    def _some_secret(cls, value: list[SecretStr]) -> list[SecretStr]:
        if not value:
            raise ValueError("FILE_URL_SECRET needs at least one key")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_shape(cls, value: str) -> str:
        if value.startswith("s3://"):
            parts = urlsplit(value)
            if not parts.netloc:
                raise ValueError("FILE_STORAGE s3://bucket/prefix needs a bucket")
        elif "://" in value:
            raise ValueError("FILE_STORAGE is a directory or s3://bucket/prefix")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> FileSettings:
        if self.environment not in ("development", "test"):
            for secret in self.url_secrets:
                raw = secret.get_secret_value()
                if raw == _DEV_URL_SECRET or len(raw) < 32:
                    raise ValueError(
                        "FILE_URL_SECRET must be real secrets of 32+ characters outside development"
                    )
        if self.upload_heartbeat * 2 > self.orphan_grace:
            raise ValueError(
                "FILE_UPLOAD_HEARTBEAT_SECONDS must be at most half of FILE_ORPHAN_GRACE_SECONDS"
            )
        return self

    @property
    def s3(self) -> S3Location | None:
        if not self.storage.startswith("s3://"):
            return None
        parts = urlsplit(self.storage)
        prefix = parts.path.strip("/")
        return S3Location(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")

    @property
    def signing_keys(self) -> list[bytes]:
        return [secret.get_secret_value().encode() for secret in self.url_secrets]

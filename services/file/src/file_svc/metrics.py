"""The file service's own metrics: bytes in and out, uploads by outcome, storage latency and
errors per backend (the shape of ``switchyard.metrics.ServiceMetrics``)."""

from __future__ import annotations

from typing import Literal

from switchyard.metrics import MetricsRegistry, ServiceMetrics

UploadOutcome = Literal[
    "ok",
    "too-large",
    "quota",
    "unsupported-type",
    "bomb",
    "bad-image",
    "empty",
    "invalid",
    "aborted",
    "storage-error",
    "replayed",
]


class FileMetrics(ServiceMetrics):
    def __init__(self, metrics: MetricsRegistry) -> None:
        super().__init__(metrics)
        self.uploads = metrics.counter(
            "file_uploads_total",
            "Upload requests by outcome (ok, too-large, quota, unsupported-type, bomb, "
            "bad-image, empty, invalid, aborted = the client went away, storage-error, "
            "replayed = an Idempotency-Key answered with the file it created)",
            ["outcome"],
        )
        self.bytes_in = metrics.counter(
            "file_bytes_received_total", "Bytes of file content received in uploads"
        )
        self.bytes_out = metrics.counter(
            "file_bytes_sent_total",
            "Bytes of file content sent (downloads and thumbnails)",
            ["kind"],
        )
        self.storage_duration = metrics.histogram(
            "file_storage_operation_duration_seconds",
            "Storage backend call latency (reads: until the first chunk)",
            ["backend", "operation"],
        )
        self.storage_errors = metrics.counter(
            "file_storage_errors_total",
            "Storage backend calls that failed (I/O or S3 errors)",
            ["backend", "operation"],
        )
        self.swept = metrics.counter(
            "file_swept_total",
            "What the sweeper removed (deleted = blobs of deleted files, abandoned = "
            "unfinished uploads, temporary = partial objects)",
            ["kind"],
        )
        self.thumbnails = metrics.counter(
            "file_thumbnails_total",
            "Thumbnail requests by whether the cached one was used",
            ["cache"],
        )

    def upload(self, outcome: UploadOutcome) -> None:
        self.uploads.labels(self.service, outcome).inc()

    def received(self, size: int) -> None:
        self.bytes_in.labels(self.service).inc(size)

    def sent(self, kind: Literal["content", "thumbnail"], size: int) -> None:
        self.bytes_out.labels(self.service, kind).inc(size)

    def storage_call(self, backend: str, operation: str, seconds: float) -> None:
        self.storage_duration.labels(self.service, backend, operation).observe(seconds)

    def storage_error(self, backend: str, operation: str) -> None:
        self.storage_errors.labels(self.service, backend, operation).inc()

    def sweep(self, kind: Literal["deleted", "abandoned", "temporary"], count: int = 1) -> None:
        self.swept.labels(self.service, kind).inc(count)

    def thumbnail(self, cache: Literal["hit", "miss"]) -> None:
        self.thumbnails.labels(self.service, cache).inc()

"""Why a file is refused. The HTTP layer turns each into its problem (status and slug)."""

from __future__ import annotations


class FileRejected(Exception):
    """An upload that will not be stored; ``slug`` names the problem type."""

    slug = "file-rejected"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsupportedType(FileRejected):
    slug = "unsupported-file-type"


class TooLarge(FileRejected):
    slug = "file-too-large"

    def __init__(self, detail: str, *, limit: int) -> None:
        super().__init__(detail)
        self.limit = limit


class QuotaExceeded(TooLarge):
    slug = "quota-exceeded"


class EmptyFile(FileRejected):
    slug = "empty-file"


class UnreadableImage(FileRejected):
    slug = "unreadable-image"


class ImageTooLarge(FileRejected):
    """More pixels than the decoder may allocate: a decompression bomb, or just too big."""

    slug = "image-too-large"

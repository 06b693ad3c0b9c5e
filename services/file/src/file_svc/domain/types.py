"""What a file is, decided from its first bytes, and what each purpose accepts.

The content decides (``filetype`` reads the signatures; plain text is recognised here);
the name and the declared ``Content-Type`` may only agree with it. A PNG called
``report.pdf``, or a Windows executable called ``cat.png``, is refused (415), never
stored under the name it claims.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass

import filetype

from .errors import UnsupportedType
from .files import Purpose

SNIFF_BYTES = 8192  # what filetype reads; office formats show their parts list within it


@dataclass(frozen=True)
class FileType:
    content_type: str
    extensions: frozenset[str]
    # Other declared Content-Types that mean the same (clients disagree on some names).
    aliases: frozenset[str] = frozenset()

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    @property
    def is_text(self) -> bool:
        return self.content_type.startswith("text/")


def _type(content_type: str, *extensions: str, aliases: tuple[str, ...] = ()) -> FileType:
    return FileType(content_type, frozenset(extensions), frozenset(aliases))


_ZIP = ("application/zip", "application/x-zip-compressed")
JPEG = _type("image/jpeg", "jpg", "jpeg", "jpe", "jfif", aliases=("image/jpg", "image/pjpeg"))
PNG = _type("image/png", "png", aliases=("image/x-png",))
GIF = _type("image/gif", "gif")
WEBP = _type("image/webp", "webp")
PDF = _type("application/pdf", "pdf", aliases=("application/x-pdf",))
DOCX = _type(
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx", aliases=_ZIP
)
XLSX = _type(
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx", aliases=_ZIP
)
PPTX = _type(
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "pptx",
    aliases=_ZIP,
)
ODT = _type("application/vnd.oasis.opendocument.text", "odt", aliases=_ZIP)
ODS = _type("application/vnd.oasis.opendocument.spreadsheet", "ods", aliases=_ZIP)
ODP = _type("application/vnd.oasis.opendocument.presentation", "odp", aliases=_ZIP)
TEXT = _type("text/plain", "txt", "text", "log")
CSV = _type("text/csv", "csv")
MARKDOWN = _type("text/markdown", "md", "markdown")

IMAGES = (JPEG, PNG, GIF, WEBP)
# Legacy binary Office files (.doc/.xls/.ppt) are left out on purpose: they are one
# container format that the first bytes cannot tell apart, and the usual macro carrier.
DOCUMENTS = (PDF, DOCX, XLSX, PPTX, ODT, ODS, ODP)
TEXTS = (TEXT, CSV, MARKDOWN)

ALLOWED: Mapping[Purpose, tuple[FileType, ...]] = {
    "avatar": IMAGES,
    "cover": IMAGES,
    "portfolio": IMAGES,
    "attachment": (*IMAGES, *DOCUMENTS, *TEXTS),
}
_BY_CONTENT_TYPE = {t.content_type: t for t in (*IMAGES, *DOCUMENTS, *TEXTS)}
_TEXT_BY_EXTENSION = {ext: t for t in TEXTS for ext in t.extensions}
_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D, 0x1B}
_CONTROL_BYTES = bytes(sorted(_CONTROL))


def unsupported(detail: str) -> UnsupportedType:
    return UnsupportedType(detail)


def extension_of(filename: str) -> str | None:
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem and ext else None


def _looks_like_text(head: bytes, complete: bool) -> bool:
    if not head or b"\x00" in head:
        return False
    if any(byte in _CONTROL for byte in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the end of the sniffed window is fine.
        return not complete and error.start >= len(head) - 3 and error.reason.startswith("unexp")
    return True


class TextStream:
    """The rest of a text file, chunk by chunk: the first 8 KiB decided that it is text,
    and all of it must be — UTF-8 (a character may be cut between chunks), no NUL or
    control bytes. A text head in front of a binary body is not a text file."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def feed(self, data: bytes, *, final: bool = False) -> None:
        if len(data.translate(None, _CONTROL_BYTES)) != len(data):
            raise unsupported("The file starts as text but holds binary (control) bytes.")
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise unsupported(
                "The file starts as text but is not valid UTF-8 throughout."
            ) from None


def sniff(head: bytes, filename: str, *, complete: bool) -> FileType:
    """The type of a file whose first bytes are ``head`` (``complete``: that is all of it).
    Raises :class:`UnsupportedType` when the content is not a type this service stores at all."""
    kind = filetype.guess(head)
    if kind is not None:
        known = _BY_CONTENT_TYPE.get(kind.mime)
        if known is None:
            raise unsupported(f"Files of this kind ({kind.mime}) are not accepted.")
        return known
    if _looks_like_text(head, complete):
        ext = extension_of(filename)
        if ext is None:
            return TEXT
        text = _TEXT_BY_EXTENSION.get(ext)
        if text is None:
            raise unsupported(
                f"The content is text, which is accepted as .txt, .csv or .md, not .{ext}."
            )
        return text
    raise unsupported("The content is not a file type this service accepts.")


def _bare_media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def check_claims(found: FileType, filename: str, declared_type: str | None) -> None:
    """:class:`UnsupportedType` when the name's extension or the declared Content-Type says something else."""
    ext = extension_of(filename)
    if ext is not None and ext not in found.extensions:
        raise unsupported(
            f"The file is {found.content_type}, but its name ends in .{ext}: "
            "the name must match the content."
        )
    if declared_type is None:
        return
    declared = _bare_media_type(declared_type)
    if declared in ("", "application/octet-stream"):
        return  # "some bytes": no claim
    if found.is_text and declared.startswith("text/"):
        return  # text/plain vs text/csv is a matter of taste, not a contradiction
    if declared != found.content_type and declared not in found.aliases:
        raise unsupported(
            f"The file is {found.content_type}, but it was sent as {declared}: "
            "the declared type must match the content."
        )


def check_purpose(found: FileType, purpose: Purpose) -> None:
    if found not in ALLOWED[purpose]:
        accepted = ", ".join(sorted(t.content_type for t in ALLOWED[purpose]))
        raise unsupported(f"A {purpose} must be one of: {accepted}; this is {found.content_type}.")

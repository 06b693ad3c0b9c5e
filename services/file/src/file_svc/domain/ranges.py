"""``Range: bytes=…`` for downloads (RFC 9110 §14): one range is served as 206; several, or
a header that does not parse, are ignored (a 200 with the whole file is always allowed)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# ASCII digits only: ``str.isdigit`` and ``int`` also take "١" or "²" (Unicode digits).
_DIGITS = re.compile(r"[0-9]{0,18}")


class Unsatisfiable(Exception):
    """The range starts past the end of the file (416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to serve, None for the whole file, :class:`Unsatisfiable` for 416."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not _DIGITS.fullmatch(first) or not _DIGITS.fullmatch(last):
        return None  # not digits, or more than 18 of them: ignored like any malformed range
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, like any malformed range
    if start >= size:
        raise Unsatisfiable
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))

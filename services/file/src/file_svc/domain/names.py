"""File names as clients send them and as downloads carry them (RFC 7578 §4.2, RFC 6266).

A name is only ever shown back (``filename``, ``Content-Disposition``); it never becomes
part of a storage path. Still, a name that tries to be a path, hides control characters
or runs to kilobytes is refused with a clear reason instead of being silently rewritten.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

MAX_FILENAME_CHARS = 255


class BadFilename(ValueError):
    pass


def clean_filename(raw: str | None) -> str:
    """The name to record, NFC-normalised; :class:`BadFilename` says why one is refused."""
    if raw is None or not raw.strip():
        raise BadFilename("The file part needs a filename.")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in raw) or "\ufffd" in raw:
        raise BadFilename("The filename is not valid UTF-8.")
    name = unicodedata.normalize("NFC", raw.strip())
    if len(name) > MAX_FILENAME_CHARS:
        raise BadFilename(f"The filename is longer than {MAX_FILENAME_CHARS} characters.")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise BadFilename("The filename must be a plain name, without directories.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise BadFilename("The filename contains control or invisible formatting characters.")
    return name


# Never in the quoted fallback: what ends or escapes the quoted string, what percent- or
# parameter-parsers read, and path separators (compatibility forms such as "／", "＂" or
# "℀" = "a/c" decompose into them, so the check runs after the decomposition).
_NOT_IN_FALLBACK = frozenset('"\\%;/')


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in _NOT_IN_FALLBACK else "_"
        for ch in decomposed
        if not unicodedata.combining(ch)
    )
    stem, dot, ext = ascii_only.strip().rpartition(".")
    if not dot:
        stem, ext = ext, ""
    if not any(ch.isalnum() for ch in stem):
        stem = "download"  # nothing readable survived: a neutral name, the real one in filename*
    return stem + (f".{ext}" if ext else "")


def content_disposition(name: str, *, inline: bool) -> str:
    """``attachment; filename="ascii"; filename*=UTF-8''percent-encoded`` (RFC 6266 §4.3:
    the quoted ASCII form for old clients, the extended form wins where understood)."""
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{_ascii_fallback(name)}\"; filename*=UTF-8''{quote(name, safe='')}"

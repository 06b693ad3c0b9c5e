"""Signed share links (DESIGN §5): ``/api/v1/files/{id}/content?expires=<unix>&signature=<hmac>``.

The signature is HMAC-SHA256 over the file id and the expiry, base64url without padding.
Keys are a list: the first signs, all verify — rotate by putting the new key first and
keeping the old one until the last link it signed has expired (at most 7 days).
Comparison is constant-time; a link is checked before anything is looked up.

A link is accepted only as it was issued: the expiry in its decimal form (no leading
zero, no sign) and the signature as the 43 characters the signer wrote — no padding, no
other alphabet, no characters skipped, no other value of the two bits the last character
carries beyond the MAC. The signature is compared as text, so no second spelling of the
same MAC exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

CONTENT_PATH = "/api/v1/files/{file_id}/content"
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url, unpadded


class LinkRefused(Exception):
    """A link that is not (or no longer) valid; ``slug`` says which."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


@dataclass(frozen=True)
class SignedLink:
    path: str
    expires: int


class LinkSigner:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a link signer needs at least one key")
        self.keys = list(keys)

    @staticmethod
    def _mac(key: bytes, file_id: str, expires: int) -> bytes:
        message = f"file-link:v1\n{file_id}\n{expires}".encode()
        return hmac.new(key, message, hashlib.sha256).digest()

    @staticmethod
    def _text(mac: bytes) -> str:
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def signature(self, file_id: str, expires: int) -> str:
        return self._text(self._mac(self.keys[0], file_id, expires))

    def link(self, file_id: str, expires: int) -> SignedLink:
        query = urlencode({"expires": expires, "signature": self.signature(file_id, expires)})
        return SignedLink(f"{CONTENT_PATH.format(file_id=file_id)}?{query}", expires)

    def verify(self, file_id: str, expires: str, signature: str, *, now: float) -> None:
        """Raise :class:`LinkRefused` unless the link is authentic and not expired."""
        if not _EXPIRES.fullmatch(expires):
            raise LinkRefused("invalid-link", "The link is malformed.")
        if not _SIGNATURE.fullmatch(signature):
            raise LinkRefused("invalid-link", "The link's signature is not valid.")
        expiry = int(expires)
        authentic = False
        for key in self.keys:  # every key is tried: the time taken does not say which matched
            expected = self._text(self._mac(key, file_id, expiry))
            authentic |= hmac.compare_digest(expected, signature)
        if not authentic:
            raise LinkRefused("invalid-link", "The link's signature is not valid.")
        if expiry <= now:
            raise LinkRefused("link-expired", "The link has expired; ask for a new one.")

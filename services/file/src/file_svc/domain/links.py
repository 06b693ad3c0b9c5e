"""Signed share links (DESIGN §5): ``/api/v1/files/{id}/content?expires=<unix>&signature=<hmac>``.

The signature is HMAC-SHA256 over the file id and the expiry, base64url without padding.
Keys are a list: the first signs, all verify — rotate by putting the new key first and
keeping the old one until the last link it signed has expired (at most 7 days).
Comparison is constant-time; a link is checked before anything is looked up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

CONTENT_PATH = "/api/v1/files/{file_id}/content"
_MAX_SIGNATURE_CHARS = 64


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

    def signature(self, file_id: str, expires: int) -> str:
        mac = self._mac(self.keys[0], file_id, expires)
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def link(self, file_id: str, expires: int) -> SignedLink:
        query = urlencode({"expires": expires, "signature": self.signature(file_id, expires)})
        return SignedLink(f"{CONTENT_PATH.format(file_id=file_id)}?{query}", expires)

    def verify(self, file_id: str, expires: str, signature: str, *, now: float) -> None:
        """Raise :class:`LinkRefused` unless the link is authentic and not expired."""
        if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            raise LinkRefused("invalid-link", "The link is malformed.")
        if len(signature) > _MAX_SIGNATURE_CHARS:
            raise LinkRefused("invalid-link", "The link's signature is not valid.")
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except ValueError:
            raise LinkRefused("invalid-link", "The link's signature is not valid.") from None
        expiry = int(expires)
        authentic = False
        for key in self.keys:  # every key is tried: the time taken does not say which matched
            authentic |= hmac.compare_digest(self._mac(key, file_id, expiry), given)
        if not authentic:
            raise LinkRefused("invalid-link", "The link's signature is not valid.")
        if expiry <= now:
            raise LinkRefused("link-expired", "The link has expired; ask for a new one.")

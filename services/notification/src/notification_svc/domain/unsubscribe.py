"""One-click unsubscribe links (RFC 8058) for non-transactional email categories.

A link carries the user and category, signed with HMAC-SHA256 under ``UNSUBSCRIBE_SECRET``;
it never expires (a mail read a year later must still work) and does one thing only:
turn that category's email off for that user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote

from notification_svc.domain.preferences import ALWAYS_SENT, CATEGORIES, Category

PATH = "/api/v1/notifications/unsubscribe"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class UnsubscribeLinks:
    secret: bytes
    base_url: str

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())

    def token(self, user_id: str, category: Category) -> str:
        body = _b64(json.dumps({"u": user_id, "c": category}, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def url(self, user_id: str, category: Category) -> str:
        token = quote(self.token(user_id, category), safe="")
        return f"{self.base_url.rstrip('/')}{PATH}?token={token}"

    def headers(self, user_id: str, category: Category) -> dict[str, str]:
        """The RFC 2369 / RFC 8058 headers, or none for always-sent categories."""
        if category in ALWAYS_SENT:
            return {}
        return {
            "List-Unsubscribe": f"<{self.url(user_id, category)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    def verify(self, token: str) -> tuple[str, Category] | None:
        body, _, mac = token.partition(".")
        if not body or not mac or not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return None
        user_id, category = claims.get("u"), claims.get("c")
        if not isinstance(user_id, str) or category not in CATEGORIES or category in ALWAYS_SENT:
            return None
        return user_id, category

"""Outgoing webhooks: subscriptions, which events each may see, and which addresses are safe.

- A subscription names event types, ``*`` patterns allowed (``payments.*``, ``*``).
- It sees only the events that concern its owner (the owner is one of the event's people:
  ``user_id``, ``owner_id``, ``customer_id``, ``contractor_id``, ``sender_id``,
  ``recipient_ids``, ``member_ids``); a subscription an admin created sees every event.
- Events that carry one-time codes are never sent anywhere (:data:`NEVER_SENT`).
- SSRF: a target address must be globally routable — not loopback, private, link-local
  (cloud metadata ``169.254.169.254``), shared, multicast, reserved or unspecified, and the
  same for an IPv4 address inside IPv6 (mapped, 6to4, NAT64) — unless
  ``WEBHOOK_ALLOW_PRIVATE_TARGETS`` is on.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from notification_svc.domain.preferences import Category

SubscriptionStatus = Literal["active", "disabled"]
WebhookDeliveryStatus = Literal["pending", "delivering", "delivered", "failed", "suppressed"]
FINAL_WEBHOOK_STATUSES = frozenset({"delivered", "failed", "suppressed"})
MAX_EVENT_TYPES = 50
# Per owner: every subscription multiplies the owner's events (and a metrics label each).
MAX_SUBSCRIPTIONS = 20
RESPONSE_KEPT = 1024  # bytes of a response body kept in the delivery log

# One-time codes travel by email only; broadcast batches are the service's own plumbing.
NEVER_SENT = frozenset(
    {"auth.otp.requested", "auth.login_code.requested", "notification.broadcast.batch_queued"}
)
_PEOPLE_FIELDS = ("user_id", "owner_id", "customer_id", "contractor_id", "sender_id")
_PEOPLE_LISTS = ("recipient_ids", "member_ids")
_CATEGORY_OF_PRODUCER: dict[str, Category] = {
    "chat": "chat",
    "payments": "payments",
    "file": "files",
    "auth": "security",
    "notification": "security",
}


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Subscription:
    id: str
    owner_id: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    sees_all: bool  # created by an admin
    status: SubscriptionStatus
    created_at: datetime
    failing_since: datetime | None = None
    disabled_reason: str | None = None

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.event_types)

    def may_see(self, data: Any) -> bool:
        return self.sees_all or self.owner_id in concerned_users(data)


def concerned_users(data: Any) -> set[str]:
    people: set[str] = set()
    for name in _PEOPLE_FIELDS:
        value = getattr(data, name, None)
        if isinstance(value, str):
            people.add(value)
    for name in _PEOPLE_LISTS:
        values = getattr(data, name, None) or ()
        people.update(v for v in values if isinstance(v, str))
    return people


def category_of(event_type: str) -> Category:
    return _CATEGORY_OF_PRODUCER.get(event_type.split(".", 1)[0], "security")


def valid_pattern(pattern: str) -> bool:
    """``a.b.c``, ``a.*``, ``*``: dotted lowercase words and ``*``, nothing else."""
    if not 1 <= len(pattern) <= 120:
        return False
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_.*")
    return set(pattern) <= allowed and ".." not in pattern


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Never globally routable, whatever the Python version says: IPv4-compatible (::/96,
# deprecated), IPv4-translated (SIIT, ::ffff:0:0:0/96), local-use NAT64 (RFC 8215),
# site-local (fec0::/10, deprecated) — each reaches an internal network where deployed.
_NEVER_V6 = tuple(
    ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "fec0::/10")
)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_allowed(address: str) -> bool:
    """True when ``address`` is a globally routable unicast address (see the module doc)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _NEVER_V6):
            return False
        inner = _embedded_v4(ip)
        if inner is not None and not address_allowed(str(inner)):
            return False
    return ip.is_global and not ip.is_multicast


def all_allowed(addresses: Iterable[str]) -> bool:
    found = list(addresses)
    return bool(found) and all(address_allowed(a) for a in found)


def matching(subscriptions: Sequence[Subscription], event_type: str) -> list[Subscription]:
    return [s for s in subscriptions if s.status == "active" and s.wants(event_type)]

"""What the gateway adds at the edge: request ids, trace context, client address,
CORS and security headers. Everything here is precomputed bytes or a cheap check."""

from __future__ import annotations

import ipaddress
import os
import random
import re
from collections.abc import Iterable, Sequence

from gateway_svc.settings import IpNetwork

REQUEST_ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
TRACEPARENT_PATTERN = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"X-Content-Type-Options: nosniff\r\n"),
    (b"x-frame-options", b"X-Frame-Options: DENY\r\n"),
    (b"referrer-policy", b"Referrer-Policy: no-referrer\r\n"),
    (
        b"content-security-policy",
        b"Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n",
    ),
)
ALL_SECURITY_HEADERS = b"".join(line for _, line in SECURITY_HEADERS)
HSTS_HEADER = b"Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n"


class RequestIds:
    """Request ids: a random per-process prefix and a counter (unique, and cheap)."""

    __slots__ = ("_prefix", "_counter")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex().encode()
        self._counter = 0

    def new(self) -> bytes:
        self._counter += 1
        return b"%s%016x" % (self._prefix, self._counter)


def accept_request_id(value: bytes | None, ids: RequestIds) -> bytes:
    if value is not None and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return ids.new()


_trace_random = random.Random(os.urandom(32))
trace_bits = _trace_random.getrandbits  # span ids of the gateway's own spans (gateway_svc.spans)


def accept_traceparent(value: bytes | None) -> bytes:
    """The incoming W3C traceparent if well formed, else a new sampled root.

    Trace ids need uniqueness, not secrecy: a seeded PRNG instead of two
    ``getrandom`` syscalls per request.
    """
    if value is not None and TRACEPARENT_PATTERN.fullmatch(value):
        return value
    bits = _trace_random.getrandbits
    return b"00-%032x-%016x-01" % (bits(128) | 1, bits(64) | 1)


_ADDRESS_KEYS: dict[str, bytes] = {}


def address_key(address: str) -> bytes:
    """What rate limits key a client address by: an IPv4 address as itself (also when
    written as IPv6, ``::ffff:a.b.c.d``), an IPv6 address by its /64 — whoever has one
    address of a /64 has them all (2^64), so a per-address limit would hold nobody."""
    if ":" not in address:
        return b"ip:" + address.encode()
    key = _ADDRESS_KEYS.get(address)
    if key is None:
        try:
            ip = ipaddress.IPv6Address(address.split("%", 1)[0])
        except ValueError:
            key = b"ip:" + address.encode()
        else:
            mapped = ip.ipv4_mapped
            if mapped is not None:
                key = b"ip:" + str(mapped).encode()
            else:
                network = ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))
                key = b"ip6:" + str(network).encode()
        if len(_ADDRESS_KEYS) >= 4096:
            _ADDRESS_KEYS.clear()
        _ADDRESS_KEYS[address] = key
    return key


class TrustedProxies:
    """Which peers may tell us the client address (X-Forwarded-For) and scheme."""

    def __init__(self, networks: Sequence[IpNetwork]) -> None:
        self.networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        known = self._cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self.networks)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[address] = known
        return known

    def client_address(self, peer: str, forwarded_for: bytes | None) -> str:
        """The right-most address in X-Forwarded-For that is not one of our proxies."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        for part in reversed(forwarded_for.split(b",")):
            candidate = part.strip().decode("latin-1")
            if not candidate:
                continue
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                return peer  # garbage in the chain: fall back to what we can see
            if not self.trusts(candidate):
                return candidate
        return peer


class Cors:
    """CORS from an allow-list of origins (``*`` allows any)."""

    ALLOW_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    DEFAULT_ALLOW_HEADERS = (
        b"Authorization, Content-Type, Idempotency-Key, X-Request-ID, traceparent, tracestate"
    )
    EXPOSE = (
        b"Access-Control-Expose-Headers:"
        b" X-Request-ID, RateLimit, RateLimit-Policy, Retry-After, Location, ETag\r\n"
    )
    MAX_AGE = b"600"

    def __init__(self, origins: Iterable[str]) -> None:
        listed = {origin.rstrip("/").encode() for origin in origins}
        self.any_origin = b"*" in listed
        self.origins = frozenset(listed - {b"*"})

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins

    def response_headers(self, origin: bytes | None) -> bytes:
        """Headers for an actual (non-preflight) response; empty for other origins."""
        if origin is None or not self.allows(origin):
            return b""
        return b"Access-Control-Allow-Origin: " + origin + b"\r\nVary: Origin\r\n" + self.EXPOSE

    def preflight_headers(self, origin: bytes, requested_headers: bytes | None) -> bytes:
        allow_headers = requested_headers if requested_headers else self.DEFAULT_ALLOW_HEADERS
        return (
            b"Access-Control-Allow-Origin: " + origin + b"\r\n"
            b"Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n"
            b"Access-Control-Allow-Methods: " + self.ALLOW_METHODS + b"\r\n"
            b"Access-Control-Allow-Headers: " + allow_headers + b"\r\n"
            b"Access-Control-Max-Age: " + self.MAX_AGE + b"\r\n"
        )


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def canonical_target(target: bytes) -> bytes | None:
    """The one form of a request target the gateway routes on and forwards (RFC 3986
    §6.2.2): the fragment dropped, percent-encoded unreserved characters in the path
    decoded, other escapes in upper case; ``None`` for a broken escape. The query is
    kept as sent. Encoded ``/``, ``\\`` and NUL stay encoded, for :func:`unsafe_path`."""
    target = target.partition(b"#")[0]
    path, mark, query = target.partition(b"?")
    if b"%" in path:
        pieces = path.split(b"%")
        out = [pieces[0]]
        for piece in pieces[1:]:
            code = piece[:2]
            if len(code) < 2 or code[0] not in _HEX or code[1] not in _HEX:
                return None
            char = int(code, 16)
            if char in _UNRESERVED:
                out.append(b"%c%s" % (char, piece[2:]))
            else:
                out.append(b"%" + code.upper() + piece[2:])
        path = b"".join(out)
    return path + mark + query


def unsafe_path(path: bytes) -> bool:
    """Paths the gateway refuses instead of guessing how an upstream would normalise them:
    dot segments, encoded slashes/dots/backslashes, backslashes and NULs."""
    if b"/." in path:
        segments = path.split(b"/")
        if b"." in segments or b".." in segments:
            return True
    if b"%" in path:
        lowered = path.lower()
        if b"%2f" in lowered or b"%2e" in lowered or b"%5c" in lowered or b"%00" in lowered:
            return True
    return b"\\" in path or b"\x00" in path


def bearer_token(authorization: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip() or None
    return None

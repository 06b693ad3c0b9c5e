"""Header tables and status lines: what the gateway does with each header it meets.

Header kinds are small ints compared on the hot path (module constants: one global
lookup each). Both tables are keyed by common spellings too, so most headers cost
one dict lookup and no lower-casing; a miss falls back to the lower-cased name.
"""

from __future__ import annotations

from http import HTTPStatus

from gateway_svc.proxy.edges import SECURITY_HEADERS, Cors

STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}


# -- request headers: the ones the gateway looks at; everything else is forwarded as received

(
    HOST,
    AUTHORIZATION,
    REQUEST_ID,
    TRACEPARENT,
    FORWARDED_FOR,
    FORWARDED_PROTO,
    NOT_FORWARDED,  # hop-by-hop or spoofable
    ORIGIN,
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    CONNECTION,
    UPGRADE,
    EXPECT,
    PREFLIGHT_METHOD,
    PREFLIGHT_HEADERS,
) = range(15)
FORWARDED_UNCHANGED = 99

REQUEST_HEADERS = {
    b"host": HOST,
    b"authorization": AUTHORIZATION,
    b"x-request-id": REQUEST_ID,
    b"traceparent": TRACEPARENT,
    b"x-forwarded-for": FORWARDED_FOR,
    b"x-forwarded-proto": FORWARDED_PROTO,
    b"x-forwarded-host": NOT_FORWARDED,
    b"forwarded": NOT_FORWARDED,
    b"x-real-ip": NOT_FORWARDED,
    b"x-user-id": NOT_FORWARDED,
    b"x-user-roles": NOT_FORWARDED,
    b"x-auth-outcome": NOT_FORWARDED,  # auth's word to the gateway, never a client's
    b"origin": ORIGIN,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"keep-alive": NOT_FORWARDED,
    b"proxy-connection": NOT_FORWARDED,
    b"proxy-authorization": NOT_FORWARDED,
    b"te": NOT_FORWARDED,
    b"trailer": NOT_FORWARDED,
    b"upgrade": UPGRADE,
    b"expect": EXPECT,
    b"access-control-request-method": PREFLIGHT_METHOD,
    b"access-control-request-headers": PREFLIGHT_HEADERS,
}
REQUEST_HEADERS_AS_SPELLED = {
    **REQUEST_HEADERS,
    **{_name.title(): _kind for _name, _kind in REQUEST_HEADERS.items()},
    b"X-Request-ID": REQUEST_ID,
    **{
        _name: FORWARDED_UNCHANGED
        for _common in (
            b"user-agent",
            b"accept",
            b"accept-encoding",
            b"accept-language",
            b"content-type",
            b"cookie",
            b"idempotency-key",
            b"referer",
            b"if-none-match",
            b"range",
        )
        for _name in (_common, _common.title())
    },
}

# -- response headers: hop-by-hop ones and our own are dropped; security headers the
# upstream set itself are kept (and not added twice: their kind is their bit in a mask)

NOT_RELAYED, UPSTREAM_LENGTH, UPSTREAM_TRANSFER_ENCODING, AUTH_OUTCOME = -1, -2, -3, -4
RELAYED_UNCHANGED = 99

RESPONSE_HEADERS = {
    b"connection": NOT_RELAYED,
    b"keep-alive": NOT_RELAYED,
    b"proxy-authenticate": NOT_RELAYED,
    b"proxy-connection": NOT_RELAYED,
    b"te": NOT_RELAYED,
    b"trailer": NOT_RELAYED,
    b"upgrade": NOT_RELAYED,
    b"x-request-id": NOT_RELAYED,
    b"ratelimit": NOT_RELAYED,
    b"ratelimit-policy": NOT_RELAYED,
    # What software (and version) an upstream runs is nobody's business outside.
    b"server": NOT_RELAYED,
    # how a credential check went, for the gateway's limits: read, never relayed
    b"x-auth-outcome": AUTH_OUTCOME,
    b"content-length": UPSTREAM_LENGTH,
    b"transfer-encoding": UPSTREAM_TRANSFER_ENCODING,
    **{name: bit for bit, (name, _) in enumerate(SECURITY_HEADERS)},
}
RESPONSE_HEADERS_AS_SPELLED = {
    **RESPONSE_HEADERS,
    **{_name.title(): _kind for _name, _kind in RESPONSE_HEADERS.items()},
    b"X-Request-ID": NOT_RELAYED,
    b"RateLimit": NOT_RELAYED,
    b"RateLimit-Policy": NOT_RELAYED,
    b"X-Auth-Outcome": AUTH_OUTCOME,
    **{
        _name: RELAYED_UNCHANGED
        for _common in (
            b"date",
            b"content-type",
            b"cache-control",
            b"etag",
            b"vary",
            b"location",
            b"last-modified",
            b"set-cookie",
            b"content-encoding",
            b"expires",
            b"accept-ranges",
            b"content-range",
            b"content-disposition",
            b"retry-after",
        )
        for _name in (_common, _common.title())
    },
}

# The hot path's lookups, bound once: under CPython 3.11 a method of an imported object
# is looked up and bound again on every call (LOAD_ATTR, not LOAD_METHOD).
request_header_kind = REQUEST_HEADERS_AS_SPELLED.get
response_header_kind = RESPONSE_HEADERS_AS_SPELLED.get
known_status_line = STATUS_LINES.get

# -- request lines and fixed lines

LOCAL_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics", b"/gateway/routes"})
# What the public listener serves of them; the admin listener (GATEWAY_ADMIN_PORT) serves all.
PUBLIC_LOCAL_PATHS = frozenset({b"/healthz", b"/readyz"})
# Methods the gateway serves; CONNECT and TRACE are known but never proxied (405),
# anything else is not implemented (501).
METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
ALLOW_HEADER = b"Allow: " + Cors.ALLOW_METHODS + b"\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def without_connection_listed(forward: list[bytes], connection_tokens: bytes) -> list[bytes]:
    """Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1): ``forward``
    (name, ": ", value, CRLF — four items per header) without them."""
    listed = {token.strip() for token in connection_tokens.split(b",")}
    listed -= {b"close", b"keep-alive", b"upgrade", b""}
    if not listed:
        return forward
    kept: list[bytes] = []
    for index in range(0, len(forward), 4):
        if forward[index].lower() not in listed:
            kept += forward[index : index + 4]
    return kept

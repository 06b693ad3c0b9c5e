"""One request through the gateway: checks at the edge, then the upstream round trip.

An :class:`Exchange` is created when a request line starts. When its headers are
complete, :meth:`Exchange.start` runs the edge checks in order — path sanity,
local endpoints, CORS preflight, route, body limit, token, rate limit — all
synchronously on the hot path (token verifications come from a cache, the local
rate-limit table is in memory). Only a JWKS refetch, a Redis round trip or a new
upstream connection make it continue in a task.

Bodies stream both ways with back-pressure: request chunks go straight to the
upstream socket (a few are held while connecting, and reading from the client is
paused past a small buffer), response chunks straight to the client (and reading
from the upstream pauses when the client is slow).
"""

from __future__ import annotations

import asyncio
import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from gateway_svc.domain.breaker import CircuitState
from gateway_svc.domain.ratelimit import Decision, retry_after_seconds, state_header
from gateway_svc.domain.routes import IDEMPOTENT_METHODS, Route
from gateway_svc.proxy.edges import (
    ALL_SECURITY_HEADERS,
    HSTS_HEADER,
    SECURITY_HEADERS,
    Cors,
    accept_request_id,
    accept_traceparent,
    bearer_token,
    canonical_target,
    unsafe_path,
)
from gateway_svc.proxy.upstream import UpstreamConnection, UpstreamHost
from switchyard.problems import PROBLEM_CONTENT_TYPE, Problem
from switchyard.tokens import InvalidToken

if TYPE_CHECKING:
    from gateway_svc.adapters.token_cache import Caller
    from gateway_svc.app import Gateway
    from gateway_svc.proxy.server import ClientConnection

STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}

# Request headers the gateway looks at (everything else is forwarded as received).
(
    H_HOST,
    H_AUTH,
    H_RID,
    H_TRACE,
    H_XFF,
    H_XFPROTO,
    H_DROP,
    H_ORIGIN,
    H_LENGTH,
    H_TE,
    H_CONNECTION,
    H_UPGRADE,
    H_EXPECT,
    H_ACR_METHOD,
    H_ACR_HEADERS,
) = range(15)
REQUEST_HEADERS = {
    b"host": H_HOST,
    b"authorization": H_AUTH,
    b"x-request-id": H_RID,
    b"traceparent": H_TRACE,
    b"x-forwarded-for": H_XFF,
    b"x-forwarded-proto": H_XFPROTO,
    b"x-forwarded-host": H_DROP,
    b"forwarded": H_DROP,
    b"x-real-ip": H_DROP,
    b"x-user-id": H_DROP,
    b"x-user-roles": H_DROP,
    b"origin": H_ORIGIN,
    b"content-length": H_LENGTH,
    b"transfer-encoding": H_TE,
    b"connection": H_CONNECTION,
    b"keep-alive": H_DROP,
    b"proxy-connection": H_DROP,
    b"proxy-authorization": H_DROP,
    b"te": H_DROP,
    b"trailer": H_DROP,
    b"upgrade": H_UPGRADE,
    b"expect": H_EXPECT,
    b"access-control-request-method": H_ACR_METHOD,
    b"access-control-request-headers": H_ACR_HEADERS,
}

H_PASS = 99
# The same table keyed by common spellings too, so most headers cost one lookup
# (no lower-casing); a miss falls back to the lower-cased name.
REQUEST_HEADERS_RAW = {
    **REQUEST_HEADERS,
    **{_name.title(): _kind for _name, _kind in REQUEST_HEADERS.items()},
    b"X-Request-ID": H_RID,
    **{
        _name: H_PASS
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

# Response headers: hop-by-hop ones and our own are dropped; security headers the
# upstream set itself are kept (and not added twice).
R_DROP, R_LENGTH, R_TE = -1, -2, -3
RESPONSE_HEADERS = {
    b"connection": R_DROP,
    b"keep-alive": R_DROP,
    b"proxy-authenticate": R_DROP,
    b"proxy-connection": R_DROP,
    b"te": R_DROP,
    b"trailer": R_DROP,
    b"upgrade": R_DROP,
    b"x-request-id": R_DROP,
    b"ratelimit": R_DROP,
    b"ratelimit-policy": R_DROP,
    b"content-length": R_LENGTH,
    b"transfer-encoding": R_TE,
    **{name: bit for bit, (name, _) in enumerate(SECURITY_HEADERS)},
}
R_PASS = 99
RESPONSE_HEADERS_RAW = {
    **RESPONSE_HEADERS,
    **{_name.title(): _kind for _name, _kind in RESPONSE_HEADERS.items()},
    b"X-Request-ID": R_DROP,
    b"RateLimit": R_DROP,
    b"RateLimit-Policy": R_DROP,
    **{
        _name: R_PASS
        for _common in (
            b"server",
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

LOCAL_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics", b"/gateway/routes"})

# How the response body reaches the client.
BODY_NONE, BODY_LENGTH, BODY_CHUNK, BODY_EOF = 0, 1, 2, 3
PENDING_LIMIT = 256 * 1024  # request bytes held while connecting before reading pauses
DISCARD_LIMIT = 64 * 1024  # request bytes read and dropped after a local answer
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Methods the gateway serves; CONNECT and TRACE are known but never proxied (405),
# anything else is not implemented (501).
METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
ALLOW_HEADER = b"Allow: " + Cors.ALLOW_METHODS + b"\r\n"


class Exchange:
    """One request/response. Attributes left at their class defaults cost nothing."""

    # request, as parsed
    method = b""
    url = b""
    path = b""
    query = b""
    host_header: bytes | None = None
    host_count = 1
    authorization: bytes | None = None
    request_id_in: bytes | None = None
    traceparent_in: bytes | None = None
    forwarded_for: bytes | None = None
    forwarded_proto: bytes | None = None
    origin: bytes | None = None
    content_length: int | None = None
    chunked = False
    transfer_coding: bytes | None = None
    connection_tokens: bytes | None = None
    upgrade: bytes | None = None
    expect_continue = False
    acr_method: bytes | None = None
    acr_headers: bytes | None = None
    head_size = 0
    oversized = False
    upgrading = False  # llhttp ended the message at its head (Connection: upgrade)
    refused: tuple[int, str, str | None, bytes] | None = None  # answer instead of serving
    keep_alive = True
    http11 = True
    # edge decisions
    route: Route | None = None
    route_name = "unmatched"
    caller: Caller | None = None
    decision: Decision | None = None
    request_id = b""
    websocket = False
    # request body
    body_done = False
    body_bytes = 0
    discard_body = False
    discard_until = 0.0  # the connection is dropped if the body is still coming then
    pending_size = 0
    # upstream
    upstream: UpstreamHost | None = None
    up: UpstreamConnection | None = None
    head: bytes | None = None
    head_sent = False
    tried: list[UpstreamHost] | None = None
    probe = False
    watched = False  # in the gateway's set of requests waiting on an upstream
    progress = 0.0
    bytes_seen = 0  # bytes_out when the watchdog last looked
    sent_at = 0.0
    upstream_seconds: float | None = None
    # response
    status = 0
    resp_started = False
    resp_done = False
    resp_mode = BODY_NONE
    resp_length: bytes | None = None
    resp_chunked = False
    resp_security = 0
    interim = False
    up_keep_alive = True
    bytes_out = 0
    out: list[bytes] | None = None
    close_after = False
    finished = False
    upgrade_rest = b""
    traceparent: bytes | None = None

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.gw: Gateway = conn.gw
        self.fwd: list[bytes] = []
        self.pending: list[bytes] = []
        self.resp_lines: list[bytes] = []
        self.started = time.perf_counter()

    # -- request parsing (called by ClientConnection) ----------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = REQUEST_HEADERS_RAW.get(name)
        if kind is None:
            lowered = name.lower()
            kind = REQUEST_HEADERS.get(lowered)
            if kind is None:
                if lowered[:7].replace(b"_", b"-") == b"x-user-":
                    # identity headers only ever come from the gateway (X_User_Id too:
                    # CGI-style servers read it as X-User-Id)
                    return
                kind = H_PASS
        if kind == H_PASS:
            self.fwd += (name, b": ", value, b"\r\n")
        elif kind == H_AUTH:
            if self.authorization is not None:
                # the gateway would verify one, the service (multidict .get) the other
                self.refuse(400, "The request has more than one Authorization header.")
            self.authorization = value
            self.fwd += (name, b": ", value, b"\r\n")
        elif kind == H_HOST:
            if self.host_header is not None:
                self.host_count = 2
            self.host_header = value
        elif kind == H_RID:
            self.request_id_in = value
        elif kind == H_TRACE:
            self.traceparent_in = value
        elif kind == H_XFF:
            self.forwarded_for = (
                value if self.forwarded_for is None else self.forwarded_for + b", " + value
            )
        elif kind == H_XFPROTO:
            self.forwarded_proto = value
        elif kind == H_ORIGIN:
            self.origin = value
            self.fwd += (name, b": ", value, b"\r\n")
        elif kind == H_LENGTH:
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = -1
        elif kind == H_TE:
            self.chunked = True
            # two Transfer-Encoding headers are one list: never plain "chunked"
            self.transfer_coding = value if self.transfer_coding is None else b"several"
        elif kind == H_CONNECTION:
            # a list field: every Connection line names hop-by-hop headers
            tokens = value.lower()
            self.connection_tokens = (
                tokens if self.connection_tokens is None else self.connection_tokens + b"," + tokens
            )
        elif kind == H_UPGRADE:
            self.upgrade = value.lower()
        elif kind == H_EXPECT:
            self.expect_continue = value.lower() == b"100-continue"
        elif kind == H_ACR_METHOD:
            self.acr_method = value
        elif kind == H_ACR_HEADERS:
            self.acr_headers = value
        # H_DROP: hop-by-hop or spoofable; not forwarded

    def check_head(self, version: str, upgrading: bool) -> bool:
        """What is wrong in the head alone, before anything is forwarded (called as
        it completes, only when something in it is unusual): True when refused."""
        self.upgrading = upgrading
        method = self.method
        if version != "1.1" and version != "1.0":
            self.refuse(505, "Only HTTP/1.1 and HTTP/1.0 requests are served.")
        elif method not in METHODS:
            if method == b"CONNECT" or method == b"TRACE":
                self.refuse(405, "This method is not allowed.", headers=ALLOW_HEADER)
            else:
                self.refuse(501, "This method is not implemented.")
        elif self.transfer_coding is not None and (
            not self.http11 or self.transfer_coding.strip().lower() != b"chunked"
        ):
            if self.http11:
                self.refuse(501, "Only the chunked transfer coding is accepted.")
            else:
                self.refuse(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
        elif upgrading and (self.chunked or self.content_length):
            # llhttp ends an upgrade request at its head: a body would be read as the
            # next request.
            self.refuse(400, "A request that asks for a protocol upgrade cannot have a body.")
        return self.refused is not None

    def refuse(
        self, status: int, detail: str, slug: str | None = None, headers: bytes = b""
    ) -> None:
        self.refused = (status, detail, slug, headers)
        self.close_after = True
        self.keep_alive = False

    def answer_refusal(self) -> None:
        assert self.refused is not None
        status, detail, slug, headers = self.refused
        if not self.request_id:
            self.request_id = accept_request_id(self.request_id_in, self.gw.request_ids)
        self.problem(status, detail, slug=slug, headers=headers)
        if not self.finished:
            self.finish()

    # -- the edge checks ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the edge checks and forward; continues in a task only when it must wait."""
        gw = self.gw
        if self.refused is not None:
            self.answer_refusal()
            return
        self.request_id = accept_request_id(self.request_id_in, gw.request_ids)
        url = self.url
        if b"%" in url or b"#" in url:
            # One canonical target: routed on, and forwarded exactly so.
            canonical = canonical_target(url)
            if canonical is None:
                self.close_after = True
                self.problem(400, "The request path is not acceptable.", slug="bad-path")
                return
            self.url = url = canonical
        mark = url.find(b"?")
        if mark >= 0:
            self.path = path = url[:mark]
            self.query = url[mark + 1 :]
        else:
            self.path = path = url
        if self.oversized:
            self.close_after = True
            self.problem(431, "The request headers are too large.")
            return
        if self.host_count > 1 or (self.host_header is None and self.http11):
            # RFC 9112 §3.2: exactly one Host in HTTP/1.1; never guess which one counts.
            self.close_after = True
            self.problem(400, "The request needs exactly one Host header.", slug="bad-host")
            return
        if not path.startswith(b"/") or unsafe_path(path):
            # only origin-form targets; no dot segments, encoded separators or NULs
            self.close_after = True
            self.problem(400, "The request path is not acceptable.", slug="bad-path")
            return
        if self.connection_tokens is not None:
            self._drop_connection_listed_headers()
        if path in LOCAL_PATHS:
            gw.admin.handle(self)
            return
        method = self.method
        if method == b"OPTIONS" and self.origin is not None and self.acr_method is not None:
            self._preflight()
            return
        route = gw.table.match(method, path, self.query)
        if route is None:
            self.problem(404, "No route serves this path.")
            return
        self.route = route
        self.route_name = route.name
        if self.upgrade is not None:
            if self.upgrade != b"websocket" or not self.upgrading:
                # e.g. h2c, or no "Connection: upgrade": served as plain HTTP/1.1 (the
                # Upgrade header is not forwarded; a body was refused with the head)
                self.upgrade = None
            elif not route.websocket:
                self.close_after = True
                self.problem(
                    400,
                    "WebSocket upgrades are not allowed on this route.",
                    slug="websocket-not-allowed",
                )
                return
            else:
                self.websocket = True
                self.close_after = True
        length = self.content_length
        if self.body_bytes > route.max_body_bytes:
            length = self.body_bytes  # chunks that came with the head
        if length is not None and (length < 0 or (length > route.max_body_bytes)):
            self.close_after = True
            if length < 0:
                self.problem(400, "Content-Length is not a number.")
            else:
                self.problem(413, f"The request body is larger than {route.max_body_bytes} bytes.")
            return
        verdict = self._authenticate()
        if verdict is None:
            gw.spawn(self._continue_slowly(verify=True))
            return
        if not verdict:
            return
        if gw.limiter_async is not None:
            gw.spawn(self._continue_slowly(verify=False))
            return
        if self._apply_limit(gw.limiter.check(self._limit_key(), route.policy)):
            self.forward()

    async def _continue_slowly(self, *, verify: bool) -> None:
        """The edge checks that had to wait: a JWKS refetch, or the Redis limiter."""
        gw = self.gw
        route = self.route
        assert route is not None
        if verify:
            assert self.authorization is not None
            try:
                self.caller = await gw.tokens.verify_async(bearer_token(self.authorization) or b"")
            except InvalidToken as error:
                if not route.public:
                    self._unauthorized(error.detail)
                    return
            if self.finished:
                return
            if not self._authorize():
                return
        if gw.limiter_async is not None:
            decision = await gw.limiter_async.check(self._limit_key(), route.policy)
        else:
            decision = gw.limiter.check(self._limit_key(), route.policy)
        if self.finished:
            return
        if self._apply_limit(decision):
            self.forward()

    def _authenticate(self) -> bool | None:
        """True to go on, False when answered (401/403), None to wait for a JWKS refetch."""
        route = self.route
        assert route is not None
        token = bearer_token(self.authorization) if self.authorization is not None else None
        if token is None:
            if route.public:
                return True
            self._unauthorized("This route needs a bearer access token.")
            return False
        try:
            self.caller = self.gw.tokens.verify(token)
        except InvalidToken as error:
            if error.reason == "unknown-kid":
                return None
            if not route.public:
                self._unauthorized(error.detail)
                return False
            return True  # a public route does not need the token; it goes on as anonymous
        return self._authorize()

    def _authorize(self) -> bool:
        route = self.route
        if (
            route is not None
            and route.auth == "admin"
            and not (self.caller and self.caller.is_admin)
        ):
            self.problem(403, "This route is for administrators.")
            return False
        return True

    def _unauthorized(self, detail: str) -> None:
        """401 — but first the refusal counts against the caller's (IP) limit, so a flood
        of missing or forged tokens is throttled like any other traffic, and the 401
        carries the RateLimit headers."""
        gw = self.gw
        route = self.route
        if route is not None and gw.limiter_async is not None:
            gw.spawn(self._unauthorized_after_limit(detail))
            return
        if route is not None and not self._apply_limit(
            gw.limiter.check(self._limit_key(), route.policy)
        ):
            return
        self._refuse(detail)

    async def _unauthorized_after_limit(self, detail: str) -> None:
        route = self.route
        assert route is not None and self.gw.limiter_async is not None
        decision = await self.gw.limiter_async.check(self._limit_key(), route.policy)
        if self.finished or not self._apply_limit(decision):
            return
        self._refuse(detail)

    def _refuse(self, detail: str) -> None:
        self.problem(
            401,
            detail,
            slug="invalid-token",
            headers=b'WWW-Authenticate: Bearer error="invalid_token"\r\n',
        )

    def client_ip(self) -> str:
        conn = self.conn
        if conn.peer_trusted:
            return self.gw.trusted_proxies.client_address(conn.peer, self.forwarded_for)
        return conn.peer

    def _limit_key(self) -> bytes:
        route = self.route
        assert route is not None
        caller = self.caller
        if caller is not None:
            return route.policy.key_prefix + caller.limit_key
        if self.conn.peer_trusted:
            return route.policy.key_prefix + b"ip:" + self.client_ip().encode()
        return route.policy.key_prefix + self.conn.ip_key

    def _apply_limit(self, decision: Decision) -> bool:
        self.decision = decision
        if decision.allowed:
            return True
        route = self.route
        assert route is not None
        self.gw.metrics.rate_limited(route.name, route.policy.name)
        wait = retry_after_seconds(decision)
        self.problem(
            429,
            f"Too many requests; retry in {wait} s.",
            headers=b"Retry-After: %d\r\n" % wait,
        )
        return False

    def _drop_connection_listed_headers(self) -> None:
        """Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1)."""
        listed = {token.strip() for token in (self.connection_tokens or b"").split(b",")}
        listed -= {b"close", b"keep-alive", b"upgrade", b""}
        if not listed:
            return
        fwd = self.fwd
        kept: list[bytes] = []
        for index in range(0, len(fwd), 4):
            if fwd[index].lower() not in listed:
                kept += fwd[index : index + 4]
        self.fwd = kept

    def _preflight(self) -> None:
        cors = self.gw.cors
        origin = self.origin
        assert origin is not None
        if not cors.allows(origin):
            self.problem(403, "This origin is not allowed.", slug="cors-origin-not-allowed")
            return
        self.respond(204, cors.preflight_headers(origin, self.acr_headers), b"", with_cors=False)

    # -- forwarding -----------------------------------------------------------------------------

    def forward(self) -> None:
        """Pick an upstream and send the request on a pooled or new connection."""
        gw = self.gw
        route = self.route
        assert route is not None
        group = gw.groups[route.upstream]
        now = gw.loop.time()
        sticky = self.client_ip().encode() if route.sticky == "client_ip" else None
        host = group.choose(now, self.tried or (), sticky)
        if host is None:
            if self.tried:
                self.problem(502, "No upstream could take the request.", slug="bad-gateway")
                return
            wait = max(1, int(group.retry_after(now) + 0.999))
            self.gw.metrics.circuit_refused(route.upstream)
            self.problem(
                503,
                f"The {route.upstream} service is unavailable; retry in {wait} s.",
                slug="upstream-unavailable",
                headers=b"Retry-After: %d\r\n" % wait,
            )
            return
        self.upstream = host
        self.probe = host.breaker.state is CircuitState.HALF_OPEN
        if self.tried is None:
            self.tried = [host]
        else:
            self.tried.append(host)
        if self.head is None:
            self.head = self._request_head(host)
        if self.expect_continue and not self.body_done:
            self.expect_continue = False
            self.conn.transport.write(CONTINUE)
        up = None if self.websocket else host.take_idle()
        if up is not None:
            self._send(up)
        else:
            gw.spawn(self._connect(host))

    def _request_head(self, host: UpstreamHost) -> bytes:
        conn = self.conn
        host_header = self.host_header or host.authority
        if conn.peer_trusted and (self.forwarded_for or self.forwarded_proto):
            xff = (
                self.forwarded_for + b", " + conn.peer_bytes
                if self.forwarded_for
                else conn.peer_bytes
            )
            proto = self.forwarded_proto or b"http"
            forwarded = b"X-Forwarded-For: " + xff + b"\r\nX-Forwarded-Proto: " + proto + b"\r\n"
        else:
            forwarded = conn.forwarded_headers
        self.traceparent = accept_traceparent(self.traceparent_in)
        parts = [
            self.method,
            b" ",
            self.url,
            b" HTTP/1.1\r\nHost: ",
            host_header,
            b"\r\n",
            *self.fwd,
            b"X-Request-ID: ",
            self.request_id,
            b"\r\ntraceparent: ",
            self.traceparent,
            b"\r\n",
            forwarded,
            b"X-Forwarded-Host: ",
            host_header,
            b"\r\n",
        ]
        if self.caller is not None:
            parts.append(self.caller.headers)
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.content_length is not None:
            parts.append(b"Content-Length: %d\r\n" % self.content_length)
        if self.websocket:
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    async def _connect(self, host: UpstreamHost) -> None:
        gw = self.gw
        try:
            _, up = await asyncio.wait_for(
                gw.loop.create_connection(lambda: UpstreamConnection(host), host.host, host.port),
                host.connect_timeout,
            )
        except TimeoutError:
            self._upstream_failed(host, 504, "The upstream did not accept a connection in time.")
            return
        except OSError:
            self._upstream_failed(host, 502, "The upstream refused the connection.")
            return
        if self.finished:
            host.put_idle(up, gw.loop.time())
            if self.probe:
                host.breaker.release_probe()
            return
        self._send(up)

    def _send(self, up: UpstreamConnection) -> None:
        gw = self.gw
        self.up = up
        up.exchange = self
        up.got_bytes = False
        host = up.upstream
        host.in_flight += 1
        pieces = [self.head]
        if self.pending:
            if self.chunked:
                for chunk in self.pending:
                    pieces += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                pieces += self.pending
            self.pending = []
            self.pending_size = 0
            self.conn.resume_reading()
        if self.body_done and self.chunked:
            pieces.append(b"0\r\n\r\n")
        up.transport.writelines(pieces)  # type: ignore[union-attr]
        if self.conn.write_paused:
            up.pause()  # the client is still behind on an earlier response
        self.head_sent = True
        self.sent_at = self.progress = gw.loop.time()
        self.watched = True
        gw.in_flight.add(self)

    def _retriable(self) -> bool:
        return (
            self.method in IDEMPOTENT_METHODS
            and not self.chunked
            and not self.content_length
            and not self.websocket
            and not self.resp_started
        )

    def _upstream_failed(self, host: UpstreamHost, status: int, detail: str) -> None:
        """A connect error or timeout: count it against the host; retry elsewhere if safe."""
        gw = self.gw
        host.breaker.failure(gw.loop.time())
        gw.metrics.upstream_outcome(host, "connect_error" if status == 502 else "connect_timeout")
        if self.finished:
            return
        route = self.route
        assert route is not None
        if self._retriable() and len(self.tried or ()) < len(gw.groups[route.upstream].hosts):
            gw.metrics.retried(route.name)
            self.forward()
            return
        self.problem(status, detail, slug="bad-gateway" if status == 502 else "gateway-timeout")

    def timed_out(self, now: float) -> None:
        """Called by the gateway's watchdog when no progress was made for the route's timeout."""
        gw = self.gw
        route = self.route
        assert route is not None
        up = self.up
        host = self.upstream
        self._detach_upstream(reuse=False)
        if self.conn.write_paused:
            # The gateway was waiting for the client to take the response (a send
            # timeout): drop the client, the upstream did nothing wrong.
            self.close_after = True
            self.status = self.status or 499
            self.conn.abort()
            return
        if not self.body_done:
            # The client stopped sending its body: not the upstream's fault.
            self.close_after = True
            if not self.resp_started:
                self.problem(408, "The request body did not arrive in time.")
            else:
                self.conn.abort()
            return
        if host is not None:
            host.breaker.failure(now)
            gw.metrics.upstream_outcome(host, "timeout")
        if up is not None and not self.resp_started:
            self.problem(
                504,
                f"The upstream did not answer within {route.timeout:g} s.",
                slug="gateway-timeout",
            )
        else:
            self.status = self.status or 504
            self.conn.abort()

    # -- request body (called by ClientConnection) ---------------------------------------------

    def on_body(self, chunk: bytes) -> None:
        size = len(chunk)
        self.body_bytes += size
        if self.discard_body:
            if self.body_bytes > DISCARD_LIMIT:
                self.close_after = True
                self.conn.close()
            return
        route = self.route
        if route is not None and self.body_bytes > route.max_body_bytes:
            self._detach_upstream(reuse=False)
            self.close_after = True
            if not self.resp_started:
                self.problem(413, f"The request body is larger than {route.max_body_bytes} bytes.")
            else:
                self.conn.abort()
            return
        up = self.up
        if up is not None and self.head_sent:
            transport = up.transport
            assert transport is not None
            if self.chunked:
                transport.writelines((b"%x\r\n" % size, chunk, b"\r\n"))
            else:
                transport.write(chunk)
            self.progress = self.gw.loop.time()
        else:
            self.pending.append(chunk)
            self.pending_size += size
            if self.pending_size > PENDING_LIMIT:
                self.conn.pause_reading()

    def on_message_complete(self) -> None:
        self.body_done = True
        up = self.up
        if up is not None and self.head_sent and self.chunked and not self.resp_done:
            up.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
        if self.resp_done:
            self.finish()

    # -- upstream response (called by UpstreamConnection) ------------------------------------------

    def out_begin(self) -> None:
        self.out = []

    def out_flush(self) -> None:
        out = self.out
        if out is not None:
            self.out = None
            if out:
                self.conn.write_many(out)

    def _emit(self, data: bytes) -> None:
        out = self.out
        if out is not None:
            out.append(data)
        else:
            self.conn.write(data)

    def on_upstream_header(self, name: bytes, value: bytes) -> None:
        kind = RESPONSE_HEADERS_RAW.get(name)
        if kind is None:
            lowered = name.lower()
            kind = RESPONSE_HEADERS.get(lowered)
            if kind is None:
                if lowered[:15] == b"access-control-":
                    return  # CORS is the gateway's business
                kind = R_PASS
        if kind == R_PASS:
            self.resp_lines += (name, b": ", value, b"\r\n")
        elif kind >= 0:
            self.resp_security |= 1 << kind
            self.resp_lines += (name, b": ", value, b"\r\n")
        elif kind == R_LENGTH:
            self.resp_length = value
        elif kind == R_TE:
            self.resp_chunked = b"chunked" in value.lower()

    def on_upstream_headers_complete(
        self, up: UpstreamConnection, status: int, keep_alive: bool
    ) -> None:
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 1xx other than 101 is not forwarded; its end is skipped too
            self.resp_lines = []
            self.resp_security = 0
            return
        if status == 101 and not self.websocket:
            # A switch no one asked for: never a raw tunnel past the gateway's checks.
            self.on_upstream_broken(up, "the upstream switched protocols unasked")
            return
        gw = self.gw
        host = up.upstream
        if status in (502, 503, 504):
            host.breaker.failure(gw.loop.time())
            gw.metrics.upstream_outcome(host, "error_status")
        else:
            host.breaker.success()
            host.ok += 1
        self.probe = False
        self.status = status
        self.up_keep_alive = keep_alive
        self.progress = gw.loop.time()
        parts = [STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, *self.resp_lines]
        self._edge_headers(parts, self.resp_security)
        if status == 101:
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            self._emit(b"".join(parts))
            self.resp_started = True
            return
        head_only = self.method == b"HEAD" or status in (204, 304)
        if head_only:
            if self.resp_length is not None:
                parts += (b"Content-Length: ", self.resp_length, b"\r\n")
            self.resp_mode = BODY_NONE
        elif self.resp_length is not None and not self.resp_chunked:
            parts += (b"Content-Length: ", self.resp_length, b"\r\n")
            self.resp_mode = BODY_LENGTH
        elif self.http11:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.resp_mode = BODY_CHUNK
            if not self.resp_chunked:
                self.up_keep_alive = False  # the body ends when the upstream closes
        else:
            self.resp_mode = BODY_EOF
            self.close_after = True
            self.up_keep_alive = self.resp_chunked and keep_alive
        if self.close_after or not self.keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self._emit(b"".join(parts))
        self.resp_started = True
        if self.method == b"HEAD":
            up.reset_parser()  # the old parser would wait for the body a HEAD never gets
            self.on_upstream_complete(up)

    def on_upstream_body(self, body: bytes) -> None:
        size = len(body)
        self.bytes_out += size
        if self.resp_mode == BODY_CHUNK:
            out = self.out
            if out is not None:
                out += (b"%x\r\n" % size, body, b"\r\n")
            else:
                self.conn.write_many((b"%x\r\n" % size, body, b"\r\n"))
        else:
            self._emit(body)

    def on_upstream_complete(self, up: UpstreamConnection) -> None:
        if self.interim:
            self.interim = False
            return
        if self.resp_done or self.status == 101:
            return  # after a 101 the parser signals the upgrade next: see on_upstream_upgraded
        if self.resp_mode == BODY_CHUNK:
            self._emit(b"0\r\n\r\n")
        self.resp_done = True
        self.upstream_seconds = self.gw.loop.time() - self.sent_at
        # A connection that refused an upgrade, or answered before the whole body was
        # sent, is never reused: where its next request starts is uncertain.
        self._detach_upstream(reuse=self.up_keep_alive and self.body_done and not self.websocket)
        if self.body_done or self.close_after:
            self.finish()
        elif (
            self.content_length is not None
            and self.content_length - self.body_bytes <= DISCARD_LIMIT
        ):
            # an early answer: read the rest of the body and drop it, for a while
            self.discard_body = True
            self.discard_until = self.gw.loop.time() + self.gw.settings.header_timeout
        else:
            self.close_after = True
            self.finish()

    def on_upstream_upgraded(self, up: UpstreamConnection, rest: bytes) -> None:
        """The upstream accepted the WebSocket upgrade: from now on, bytes flow both ways."""
        if self.up is not up:
            return  # already refused (a 101 to a request that asked for no upgrade)
        if self.status != 101:
            self.on_upstream_broken(up, "the upstream switched protocols without 101")
            return
        if rest:
            self._emit(rest)
        self.out_flush()
        self.upstream_seconds = self.gw.loop.time() - self.sent_at
        self._cancel_timer()
        self.up = None
        up.exchange = None
        up.upstream.in_flight -= 1
        if self.upgrade_rest and up.transport is not None:
            # what the client sent after its handshake, held until this 101
            up.transport.write(self.upgrade_rest)
            self.upgrade_rest = b""
        self.conn.start_tunnel(up)
        self.resp_done = True
        self.finish(tunnel=True)

    def on_upstream_broken(self, up: UpstreamConnection, reason: str) -> None:
        host = up.upstream
        host.breaker.failure(self.gw.loop.time())
        self.gw.metrics.upstream_outcome(host, "bad_response")
        self._detach_upstream(reuse=False)
        if not self.resp_started:
            self.problem(502, "The upstream sent a response the gateway could not read.")
        else:
            self.conn.abort()

    def on_upstream_lost(self, up: UpstreamConnection) -> None:
        """The upstream connection closed while this exchange was on it."""
        gw = self.gw
        host = up.upstream
        host.in_flight -= 1
        self.up = None
        self._cancel_timer()
        if self.finished:
            return
        if self.resp_started:
            if self.resp_mode == BODY_CHUNK and not self.resp_chunked and self.resp_length is None:
                self._emit(b"0\r\n\r\n")  # a close-delimited body ended normally
                self.resp_done = True
                self.upstream_seconds = gw.loop.time() - self.sent_at
                if self.body_done:
                    self.finish()
                else:
                    self.close_after = True
                    self.finish()
            elif self.resp_mode == BODY_EOF:
                self.resp_done = True
                self.finish()
            else:
                self.conn.abort()  # truncated: the client must see a broken response
            return
        reused_and_stale = up.served > 0 and not up.got_bytes
        if reused_and_stale and self._retriable():
            # A pooled connection the upstream had closed: not the host's fault, resend.
            self.tried = [h for h in (self.tried or []) if h is not host]
            gw.spawn(self._connect(host))
            return
        if not reused_and_stale:
            host.breaker.failure(gw.loop.time())
            gw.metrics.upstream_outcome(host, "reset")
        self.problem(
            502, "The upstream closed the connection without answering.", slug="bad-gateway"
        )

    def _cancel_timer(self) -> None:
        if self.watched:
            self.watched = False
            self.gw.in_flight.discard(self)

    def _detach_upstream(self, *, reuse: bool) -> None:
        self._cancel_timer()
        up = self.up
        if up is None:
            return
        self.up = None
        up.exchange = None
        up.upstream.in_flight -= 1
        if reuse and not up.closed:
            if up.reading_paused:
                up.resume()
            up.served += 1
            up.release(self.gw.loop.time())
        else:
            up.abort()

    # -- answers the gateway gives itself -------------------------------------------------

    def _edge_headers(self, parts: list[bytes], security_seen: int = 0) -> None:
        parts += (b"X-Request-ID: ", self.request_id, b"\r\n")
        decision = self.decision
        if decision is not None:
            parts.append(state_header(self.route.policy, decision))  # type: ignore[union-attr]
        if self.origin is not None:
            parts.append(self.gw.cors.response_headers(self.origin))
        if security_seen == 0:
            parts.append(ALL_SECURITY_HEADERS)
        else:
            for bit, (_, line) in enumerate(SECURITY_HEADERS):
                if not security_seen & (1 << bit):
                    parts.append(line)
        if self.forwarded_proto == b"https" and self.conn.peer_trusted:
            parts.append(HSTS_HEADER)

    def respond(
        self,
        status: int,
        headers: bytes,
        body: bytes,
        content_type: bytes | None = None,
        *,
        with_cors: bool = True,
    ) -> None:
        """Answer from the gateway itself (problems, preflights, local endpoints)."""
        if self.resp_started or self.finished:
            return
        self._detach_upstream(reuse=False)
        if self.conn.held is self:
            # a handshake answered here: what the client sent after it is not HTTP
            self.close_after = True
        if not self.body_done:
            self.discard_body = True
            self.discard_until = self.gw.loop.time() + self.gw.settings.header_timeout
            if self.chunked or (self.content_length or 0) - self.body_bytes > DISCARD_LIMIT:
                self.close_after = True
        self.status = status
        parts = [STATUS_LINES.get(status) or b"HTTP/1.1 %d Error\r\n" % status, headers]
        origin = self.origin
        if not with_cors:
            self.origin = None
        self._edge_headers(parts)
        self.origin = origin
        if content_type is not None:
            parts += (b"Content-Type: ", content_type, b"\r\n")
        if status not in (204, 304):
            parts.append(b"Content-Length: %d\r\n" % len(body))
        if self.close_after or not self.keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        if body and self.method != b"HEAD":
            parts.append(body)
        self.bytes_out = len(body)
        self.resp_started = True
        self.resp_done = True
        self.conn.write(b"".join(parts))
        if self.body_done or self.close_after:
            self.finish()

    def respond_json(self, status: int, data: Any, headers: bytes = b"") -> None:
        self.respond(status, headers, json.dumps(data).encode(), b"application/json")

    def problem(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        headers: bytes = b"",
        extra: dict[str, Any] | None = None,
    ) -> None:
        problem = Problem(status, detail, slug=slug, extra=extra)
        body = problem.body(
            instance=self.path.decode("latin-1") or "/",
            request_id=self.request_id.decode("latin-1"),
        )
        self.respond(status, headers, json.dumps(body).encode(), PROBLEM_CONTENT_TYPE.encode())

    # -- the end ---------------------------------------------------------------------------------

    def finish(self, *, tunnel: bool = False) -> None:
        if self.finished:
            return
        self.finished = True
        self.out_flush()
        self._cancel_timer()
        upstream = self.upstream
        if self.probe and upstream is not None:
            upstream.breaker.release_probe()
        if self.up is not None:
            self._detach_upstream(reuse=False)
        gw = self.gw
        elapsed = time.perf_counter() - self.started
        status = self.status or 499
        gw.metrics.request(
            self.route_name, self.method, status, elapsed, upstream, self.upstream_seconds
        )
        gw.access_log.write(self, status, elapsed)
        if not tunnel:
            self.conn.exchange_finished(self)

    def client_gone(self) -> None:
        """The client closed its connection: drop the upstream side and account for it."""
        if self.finished:
            return
        if not self.resp_done and self.status == 0:
            self.status = 499
        self._detach_upstream(reuse=False)
        self.finished = True
        self._cancel_timer()
        if self.probe and self.upstream is not None:
            self.upstream.breaker.release_probe()
        elapsed = time.perf_counter() - self.started
        self.gw.metrics.request(
            self.route_name, self.method, self.status, elapsed, self.upstream, self.upstream_seconds
        )
        self.gw.access_log.write(self, self.status, elapsed)

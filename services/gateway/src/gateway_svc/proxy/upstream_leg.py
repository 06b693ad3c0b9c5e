"""The upstream round trip of one exchange: pick a host, send the request head on a
pooled or new connection, relay the response to the client, retry when safe, and
answer for the upstream when it fails or stalls.

Response chunks go straight to the client (reading from the upstream pauses when
the client is slow); what one upstream read produces goes out in one write.
"""

from __future__ import annotations

import asyncio

from gateway_svc.domain.breaker import CircuitState
from gateway_svc.domain.routes import IDEMPOTENT_METHODS
from gateway_svc.proxy.edges import accept_traceparent
from gateway_svc.proxy.exchange_state import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
)
from gateway_svc.proxy.headers import (
    AUTH_OUTCOME,
    CONTINUE,
    RELAYED_UNCHANGED,
    RESPONSE_HEADERS,
    UPSTREAM_LENGTH,
    UPSTREAM_TRANSFER_ENCODING,
    known_status_line,
    response_header_kind,
)
from gateway_svc.proxy.responses import DISCARD_LIMIT, Responses
from gateway_svc.proxy.upstream import UpstreamConnection, UpstreamHost


class UpstreamLeg(Responses):
    # -- sending the request ---------------------------------------------------------------

    def forward(self) -> None:
        """Pick an upstream and send the request on a pooled or new connection."""
        context = self.context
        route = self.route
        assert route is not None
        group = context.upstreams[route.upstream]
        now = context.loop.time()
        sticky = self.client_ip().encode() if route.sticky == "client_ip" else None
        host = group.choose(now, self.tried or (), sticky)
        if host is None:
            if self.tried:
                self.problem(502, "No upstream could take the request.", slug="bad-gateway")
                return
            wait = max(1, int(group.retry_after(now) + 0.999))
            context.metrics.circuit_refused(route.upstream)
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
        connection = None if self.websocket else host.take_idle()
        if connection is not None:
            self._send(connection, self.head)
        else:
            context.spawn(self._connect(host))

    def _request_head(self, host: UpstreamHost) -> bytes:
        conn = self.conn
        host_header = self.host_header or host.authority
        if conn.peer_trusted and (self.forwarded_for or self.forwarded_proto):
            forwarded_for = (
                self.forwarded_for + b", " + conn.peer_bytes
                if self.forwarded_for
                else conn.peer_bytes
            )
            proto = self.forwarded_proto or b"http"
            forwarded = (
                b"X-Forwarded-For: " + forwarded_for + b"\r\nX-Forwarded-Proto: " + proto + b"\r\n"
            )
        else:
            forwarded = conn.forwarded_headers
        spans = self.context.spans
        self.traceparent = (
            accept_traceparent(self.traceparent_in) if spans is None else spans.begin(self)
        )
        parts = [
            self.method,
            b" ",
            self.url,
            b" HTTP/1.1\r\nHost: ",
            host_header,
            b"\r\n",
            *self.forward_headers,
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
        loop = self.context.loop
        try:
            transport, connection = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(host), host.host, host.port),
                host.connect_timeout,
            )
        except TimeoutError:
            self._upstream_failed(host, 504, "The upstream did not accept a connection in time.")
            return
        except OSError:
            self._upstream_failed(host, 502, "The upstream refused the connection.")
            return
        if self.finished:
            host.put_idle(connection, loop.time())
            if self.probe:
                host.breaker.release_probe()
            return
        assert self.head is not None  # built by forward() before connecting
        self._send(connection, self.head)

    def _send(self, connection: UpstreamConnection, head: bytes) -> None:
        context = self.context
        self.upstream_connection = connection
        connection.exchange = self
        connection.got_bytes = False
        connection.upstream.in_flight += 1
        pieces = [head]
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
        transport = connection.transport
        assert transport is not None  # connected: taken from the pool or just made
        transport.writelines(pieces)
        if self.conn.write_paused:
            connection.pause()  # the client is still behind on an earlier response
        self.head_sent = True
        self.sent_at = self.progress = context.loop.time()
        self.watched = True
        context.in_flight.add(self)

    def _retriable(self) -> bool:
        return (
            self.method in IDEMPOTENT_METHODS
            and not self.chunked
            and not self.content_length
            and not self.websocket
            and not self.response_started
        )

    def _upstream_failed(self, host: UpstreamHost, status: int, detail: str) -> None:
        """A connect error or timeout: count it against the host; retry elsewhere if safe."""
        context = self.context
        host.breaker.failure(context.loop.time())
        context.metrics.upstream_outcome(
            host, "connect_error" if status == 502 else "connect_timeout"
        )
        if self.finished:
            return
        route = self.route
        assert route is not None
        if self._retriable() and len(self.tried or ()) < len(
            context.upstreams[route.upstream].hosts
        ):
            context.metrics.retried(route.name)
            self.forward()
            return
        self.problem(status, detail, slug="bad-gateway" if status == 502 else "gateway-timeout")

    def timed_out(self, now: float) -> None:
        """Called by the gateway's watchdog when no progress was made for the route's timeout."""
        route = self.route
        assert route is not None
        connection = self.upstream_connection
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
            if not self.response_started:
                self.problem(408, "The request body did not arrive in time.")
            else:
                self.conn.abort()
            return
        if host is not None:
            host.breaker.failure(now)
            self.context.metrics.upstream_outcome(host, "timeout")
        if connection is not None and not self.response_started:
            self.problem(
                504,
                f"The upstream did not answer within {route.timeout:g} s.",
                slug="gateway-timeout",
            )
        else:
            self.status = self.status or 504
            self.conn.abort()

    # -- the response (called by UpstreamConnection) ------------------------------------------

    def on_upstream_header(self, name: bytes, value: bytes) -> None:
        kind = response_header_kind(name)
        if kind is None:
            lowered = name.lower()
            kind = RESPONSE_HEADERS.get(lowered)
            if kind is None:
                if lowered[:15] == b"access-control-":
                    return  # CORS is the gateway's business
                kind = RELAYED_UNCHANGED
        if kind == RELAYED_UNCHANGED:
            self.response_headers += (name, b": ", value, b"\r\n")
        elif kind >= 0:  # a security header: its bit
            self.security_seen |= 1 << kind
            self.response_headers += (name, b": ", value, b"\r\n")
        elif kind == UPSTREAM_LENGTH:
            self.response_length = value
        elif kind == UPSTREAM_TRANSFER_ENCODING:
            self.response_chunked = b"chunked" in value.lower()
        elif kind == AUTH_OUTCOME:
            self.auth_outcome = value
        # NOT_RELAYED: hop-by-hop, or the gateway's own

    def on_upstream_headers_complete(
        self, connection: UpstreamConnection, status: int, keep_alive: bool
    ) -> None:
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 1xx other than 101 is not forwarded; its end is skipped too
            self.response_headers = []
            self.security_seen = 0
            self.auth_outcome = None
            return
        if status == 101 and not self.websocket:
            # A switch no one asked for: never a raw tunnel past the gateway's checks.
            self.on_upstream_broken(connection, "the upstream switched protocols unasked")
            return
        context = self.context
        host = connection.upstream
        if status in (502, 503, 504):
            host.breaker.failure(context.loop.time())
            context.metrics.upstream_outcome(host, "error_status")
        else:
            host.breaker.success()
            host.ok += 1
        self.probe = False
        route = self.route
        if self.auth_outcome is not None and route is not None and route.outcome is not None:
            refusal = context.admission.answered(self, route, self.auth_outcome)
            if refusal is not None:
                self.answer(refusal)  # instead of the upstream's answer, whatever it said
                return
        self.status = status
        self.upstream_keep_alive = keep_alive
        self.progress = context.loop.time()
        parts = [
            known_status_line(status) or b"HTTP/1.1 %d Unknown\r\n" % status,
            *self.response_headers,
        ]
        self._edge_headers(parts, self.security_seen)
        if status == 101:
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            self._emit(b"".join(parts))
            self.response_started = True
            return
        if self.method == b"HEAD" or status in (204, 304):
            if self.response_length is not None:
                parts += (b"Content-Length: ", self.response_length, b"\r\n")
            self.body_mode = BODY_NONE
        elif self.response_length is not None and not self.response_chunked:
            parts += (b"Content-Length: ", self.response_length, b"\r\n")
            self.body_mode = BODY_LENGTH
        elif self.http11:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.body_mode = BODY_CHUNKED
            if not self.response_chunked:
                self.upstream_keep_alive = False  # the body ends when the upstream closes
        else:
            self.body_mode = BODY_UNTIL_CLOSE
            self.close_after = True
            self.upstream_keep_alive = self.response_chunked and keep_alive
        if self.close_after or not self.keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self._emit(b"".join(parts))
        self.response_started = True
        if self.method == b"HEAD":
            connection.reset_parser()  # the old parser would wait for the body a HEAD never gets
            self.on_upstream_complete(connection)

    def on_upstream_body(self, body: bytes) -> None:
        size = len(body)
        self.bytes_out += size
        if self.body_mode == BODY_CHUNKED:
            out = self.out
            if out is not None:
                out += (b"%x\r\n" % size, body, b"\r\n")
            else:
                self.conn.write_many((b"%x\r\n" % size, body, b"\r\n"))
        else:
            self._emit(body)

    def on_upstream_complete(self, connection: UpstreamConnection) -> None:
        if self.interim:
            self.interim = False
            return
        if self.response_done or self.status == 101:
            return  # after a 101 the parser signals the upgrade next: see on_upstream_upgraded
        if self.body_mode == BODY_CHUNKED:
            self._emit(b"0\r\n\r\n")
        self.response_done = True
        context = self.context
        self.upstream_seconds = context.loop.time() - self.sent_at
        # A connection that refused an upgrade, or answered before the whole body was
        # sent, is never reused: where its next request starts is uncertain.
        self._detach_upstream(
            reuse=self.upstream_keep_alive and self.body_done and not self.websocket
        )
        if self.body_done or self.close_after:
            self.finish()
        elif (
            self.content_length is not None
            and self.content_length - self.body_bytes <= DISCARD_LIMIT
        ):
            # an early answer: read the rest of the body and drop it, for a while
            self.discard_body = True
            self.discard_until = context.loop.time() + context.header_timeout
        else:
            self.close_after = True
            self.finish()

    def on_upstream_upgraded(self, connection: UpstreamConnection, rest: bytes) -> None:
        """The upstream accepted the WebSocket upgrade: from now on, bytes flow both ways."""
        if self.upstream_connection is not connection:
            return  # already refused (a 101 to a request that asked for no upgrade)
        if self.status != 101:
            self.on_upstream_broken(connection, "the upstream switched protocols without 101")
            return
        if rest:
            self._emit(rest)
        self.out_flush()
        self.upstream_seconds = self.context.loop.time() - self.sent_at
        self._cancel_timer()
        self.upstream_connection = None
        connection.exchange = None
        connection.upstream.in_flight -= 1
        if self.upgrade_rest and connection.transport is not None:
            # what the client sent after its handshake, held until this 101
            connection.transport.write(self.upgrade_rest)
            self.upgrade_rest = b""
        self.conn.start_tunnel(connection)
        self.response_done = True
        self.finish(tunnel=True)

    def on_upstream_broken(self, connection: UpstreamConnection, reason: str) -> None:
        host = connection.upstream
        host.breaker.failure(self.context.loop.time())
        self.context.metrics.upstream_outcome(host, "bad_response")
        self._detach_upstream(reuse=False)
        if not self.response_started:
            self.problem(502, "The upstream sent a response the gateway could not read.")
        else:
            self.conn.abort()

    def on_upstream_lost(self, connection: UpstreamConnection) -> None:
        """The upstream connection closed while this exchange was on it."""
        context = self.context
        host = connection.upstream
        host.in_flight -= 1
        self.upstream_connection = None
        self._cancel_timer()
        if self.finished:
            return
        if self.response_started:
            if (
                self.body_mode == BODY_CHUNKED
                and not self.response_chunked
                and self.response_length is None
            ):
                self._emit(b"0\r\n\r\n")  # a close-delimited body ended normally
                self.response_done = True
                self.upstream_seconds = context.loop.time() - self.sent_at
                if not self.body_done:
                    self.close_after = True
                self.finish()
            elif self.body_mode == BODY_UNTIL_CLOSE:
                self.response_done = True
                self.finish()
            else:
                self.conn.abort()  # truncated: the client must see a broken response
            return
        reused_and_stale = connection.served > 0 and not connection.got_bytes
        if reused_and_stale and self._retriable():
            # A pooled connection the upstream had closed: not the host's fault, resend.
            self.tried = [tried for tried in (self.tried or []) if tried is not host]
            context.spawn(self._connect(host))
            return
        if not reused_and_stale:
            host.breaker.failure(context.loop.time())
            context.metrics.upstream_outcome(host, "reset")
        self.problem(
            502, "The upstream closed the connection without answering.", slug="bad-gateway"
        )

"""What one exchange knows, and how it ends.

The :class:`~gateway_svc.proxy.exchange.Exchange` is built in layers, each in its
own module, each using only the layers below it:

- :class:`ExchangeState` (here): the state, output batching, detaching from the
  upstream connection, the end (:meth:`finish`, :meth:`client_gone`);
- :class:`~gateway_svc.proxy.responses.Responses`: answers the gateway gives itself;
- :class:`~gateway_svc.proxy.upstream_leg.UpstreamLeg`: the upstream round trip;
- :class:`~gateway_svc.proxy.exchange.Exchange`: the request as it is parsed, the
  edge checks, the request body.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway_svc.adapters.token_cache import Caller
    from gateway_svc.domain.ratelimit import Decision
    from gateway_svc.domain.routes import Route
    from gateway_svc.proxy.context import ProxyContext
    from gateway_svc.proxy.server import ClientConnection
    from gateway_svc.proxy.upstream import UpstreamConnection, UpstreamHost

# How the response body reaches the client.
BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE = 0, 1, 2, 3


class ExchangeState:
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
    preflight_method: bytes | None = None
    preflight_headers: bytes | None = None
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
    upstream_connection: UpstreamConnection | None = None
    head: bytes | None = None
    head_sent = False
    tried: list[UpstreamHost] | None = None
    probe = False
    watched = False  # in the context's set of requests waiting on an upstream
    progress = 0.0
    bytes_seen = 0  # bytes_out when the watchdog last looked
    sent_at = 0.0
    upstream_seconds: float | None = None
    # response
    status = 0
    response_started = False
    response_done = False
    body_mode = BODY_NONE
    response_length: bytes | None = None
    response_chunked = False
    security_seen = 0  # a bit per security header the upstream set itself
    auth_outcome: bytes | None = None  # X-Auth-Outcome: how a credential check went
    interim = False
    upstream_keep_alive = True
    bytes_out = 0
    out: list[bytes] | None = None
    close_after = False
    finished = False
    upgrade_rest = b""
    traceparent: bytes | None = None
    # the gateway's own span, when traces are exported (gateway_svc.spans)
    span_id = 0
    span_parent: int | None = None

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.context: ProxyContext = conn.context
        self.forward_headers: list[bytes] = []  # name, ": ", value, CRLF per header
        self.pending: list[bytes] = []  # body chunks held while connecting
        self.response_headers: list[bytes] = []  # the upstream's, to relay
        self.started = time.perf_counter()

    def client_ip(self) -> str:
        conn = self.conn
        if conn.peer_trusted:
            return self.context.trusted_proxies.client_address(conn.peer, self.forwarded_for)
        return conn.peer

    # -- writing to the client: what one upstream read produces goes out in one call --------

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

    # -- leaving the upstream connection ------------------------------------------------------

    def timed_out(self, now: float) -> None:
        """Called by the watchdog when no progress was made for the route's timeout
        (implemented by the upstream leg, which put the exchange in ``in_flight``)."""
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        if self.watched:
            self.watched = False
            self.context.in_flight.discard(self)

    def _detach_upstream(self, *, reuse: bool) -> None:
        self._cancel_timer()
        connection = self.upstream_connection
        if connection is None:
            return
        self.upstream_connection = None
        connection.exchange = None
        connection.upstream.in_flight -= 1
        if reuse and not connection.closed:
            if connection.reading_paused:
                connection.resume()
            connection.served += 1
            connection.release(self.context.loop.time())
        else:
            connection.abort()

    # -- the end --------------------------------------------------------------------------------

    def finish(self, *, tunnel: bool = False) -> None:
        if self.finished:
            return
        self.finished = True
        self.out_flush()
        self._cancel_timer()
        upstream = self.upstream
        if self.probe and upstream is not None:
            upstream.breaker.release_probe()
        if self.upstream_connection is not None:
            self._detach_upstream(reuse=False)
        context = self.context
        elapsed = time.perf_counter() - self.started
        status = self.status or 499
        context.metrics.request(
            self.route_name, self.method, status, elapsed, upstream, self.upstream_seconds
        )
        context.access_log.write(self, status, elapsed)
        spans = context.spans
        if spans is not None:
            spans.record(self, status, elapsed)
        if not tunnel:
            self.conn.exchange_finished(self)

    def client_gone(self) -> None:
        """The client closed its connection: drop the upstream side and account for it."""
        if self.finished:
            return
        if not self.response_done and self.status == 0:
            self.status = 499
        self._detach_upstream(reuse=False)
        self.finished = True
        self._cancel_timer()
        if self.probe and self.upstream is not None:
            self.upstream.breaker.release_probe()
        elapsed = time.perf_counter() - self.started
        context = self.context
        context.metrics.request(
            self.route_name, self.method, self.status, elapsed, self.upstream, self.upstream_seconds
        )
        context.access_log.write(self, self.status, elapsed)
        spans = context.spans
        if spans is not None:
            spans.record(self, self.status, elapsed)

"""The client side of the proxy: an HTTP/1.1 server protocol on httptools.

One :class:`ClientConnection` per client socket. It parses requests, hands each to
an :class:`~gateway_svc.proxy.exchange.Exchange`, keeps responses in request order
(pipelined requests wait their turn), applies back-pressure, and after a WebSocket
upgrade turns into a plain byte tunnel to the upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import httptools

from gateway_svc.proxy.exchange import Exchange

if TYPE_CHECKING:
    from gateway_svc.app import Gateway
    from gateway_svc.proxy.upstream import UpstreamConnection

log = logging.getLogger("gateway.server")


class _HeadersTooLarge(Exception):
    pass


class ClientConnection(asyncio.Protocol):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.peer = "unknown"
        self.cur: Exchange | None = None  # the request being parsed
        self.active: Exchange | None = None  # the request being answered
        self.waiting: deque[Exchange] | None = None  # pipelined requests behind it
        self.reading_paused = False
        self.write_paused = False  # the client is not taking what we send
        self.closed = False
        self.tunnel: asyncio.Transport | None = None
        self.last_activity = 0.0
        self.head_started = 0.0
        self.peer_bytes = b""
        self.peer_trusted = False
        self.ip_key = b""
        self.forwarded_headers = b""

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "unknown"
        gw = self.gw
        self.peer_bytes = self.peer.encode()
        self.peer_trusted = bool(gw.trusted_proxies) and gw.trusted_proxies.trusts(self.peer)
        self.ip_key = b"ip:" + self.peer_bytes
        self.forwarded_headers = (
            b"X-Forwarded-For: " + self.peer_bytes + b"\r\nX-Forwarded-Proto: http\r\n"
        )
        gw.connections.add(self)
        self.last_activity = gw.loop.time()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadersTooLarge) and self.cur is not None:
                self._reject(431, "The request headers are too large.")
            else:
                log.error("request handling failed", exc_info=error.__context__ or error)
                self._reject(500, "The gateway could not handle the request.")
        except httptools.HttpParserError:
            self._reject(400, "The request is not valid HTTP/1.1.")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gw.connections.discard(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
        active = self.active
        if active is not None:
            self.active = None
            active.client_gone()
        if self.cur is not None and self.cur is not active:
            self.cur = None
        self.waiting = None

    def pause_writing(self) -> None:
        # The flag outlives the exchange: asyncio says "pause" once, and an upstream
        # attached later (the next keep-alive request) must start paused too.
        self.write_paused = True
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.pause_reading()
            return
        active = self.active
        if active is not None and active.up is not None:
            active.up.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.resume_reading()
            return
        active = self.active
        if active is not None:
            active.progress = self.gw.loop.time()  # the client took bytes: progress
            if active.up is not None:
                active.up.resume()

    # -- httptools callbacks -------------------------------------------------------------------

    # No on_message_begin: httptools skips callbacks a protocol does not define, and
    # the first on_url of a message starts the exchange just as well.

    def on_url(self, url: bytes) -> None:
        cur = self.cur
        if cur is None or cur.method:
            cur = self.cur = Exchange(self)
            self.head_started = self.gw.loop.time()
        cur.url += url
        cur.head_size += len(url)
        if cur.head_size > self.gw.max_header_bytes:
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        cur = self.cur
        assert cur is not None
        cur.head_size += len(name) + len(value) + 4
        if cur.head_size > self.gw.max_header_bytes:
            raise _HeadersTooLarge
        cur.on_header(name, value)

    def on_headers_complete(self) -> None:
        cur = self.cur
        assert cur is not None
        parser = self.parser
        cur.method = parser.get_method()
        cur.keep_alive = parser.should_keep_alive()
        cur.http11 = parser.get_http_version() == "1.1"
        self.head_started = 0.0
        if self.active is None:
            self.active = cur
            cur.start()
        else:
            if self.waiting is None:
                self.waiting = deque()
            self.waiting.append(cur)
            self.pause_reading()  # one request at a time; the socket buffers the rest

    def on_body(self, body: bytes) -> None:
        cur = self.cur
        if cur is not None:
            cur.on_body(body)

    def on_message_complete(self) -> None:
        cur = self.cur
        if cur is not None:
            self.cur = None
            cur.on_message_complete()

    # -- used by exchanges -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def write_many(self, pieces: list[bytes] | tuple[bytes, ...]) -> None:
        if not self.closed:
            self.transport.writelines(pieces)

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def exchange_finished(self, exchange: Exchange) -> None:
        if self.active is not exchange:
            return
        self.active = None
        self.last_activity = self.gw.loop.time()
        if exchange.close_after or not exchange.keep_alive:
            self.close()
            return
        waiting = self.waiting
        if waiting:
            nxt = waiting.popleft()
            self.active = nxt
            if not waiting:
                self.resume_reading()
            nxt.start()
        elif self.reading_paused and exchange.pending_size == 0:
            self.resume_reading()

    def start_tunnel(self, up: UpstreamConnection) -> None:
        """After ``101 Switching Protocols``: relay raw bytes both ways until either side closes."""
        up_transport = up.transport
        assert up_transport is not None
        self.tunnel = up_transport
        up.tunnel = self.transport
        self.active = None
        self.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()

    # -- errors and upgrades ----------------------------------------------------------------

    def _reject(self, status: int, detail: str) -> None:
        """A request we cannot parse or serve: answer once (if nothing was sent yet) and close."""
        exchange = self.cur or self.active
        if exchange is None:
            # Garbage before a request line was even parsed: still a 400, not a silent close.
            exchange = self.cur = Exchange(self)
        if exchange.resp_started:
            self.abort()
            return
        exchange.close_after = True
        exchange.keep_alive = False
        if not exchange.request_id:
            exchange.request_id = self.gw.request_ids.new()
        if self.active is None:
            self.active = exchange
        if self.active is exchange:
            exchange.problem(status, detail)
            if not exchange.finished:
                exchange.finish()
        else:
            self.abort()

    def _upgrade_requested(self, rest: bytes) -> None:
        exchange = self.active if self.active is not None else self.cur
        if exchange is not None and exchange.websocket:
            # The parser stops at an upgrade; what follows belongs to the tunnel.
            exchange.body_done = True
            self.cur = None
            if exchange.up is not None and exchange.head_sent:
                if rest:
                    exchange.up.transport.write(rest)  # type: ignore[union-attr]
            else:
                exchange.upgrade_rest += rest
            return
        if exchange is not None and exchange.finished:
            self.close()  # refused (e.g. websocket on a plain route): already answered
            return
        # Another protocol (h2c): the request is served as plain HTTP/1.1, parsing goes on.
        self.parser = httptools.HttpRequestParser(self)
        if exchange is not None and not exchange.body_done and self.cur is exchange:
            self.cur = None
            exchange.on_message_complete()
        if rest:
            self.data_received(rest)

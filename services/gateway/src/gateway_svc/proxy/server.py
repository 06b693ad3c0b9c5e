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

from gateway_svc.proxy.edges import address_key
from gateway_svc.proxy.exchange import PENDING_LIMIT, Exchange
from gateway_svc.proxy.headers import METHODS

if TYPE_CHECKING:
    from gateway_svc.proxy.context import ProxyContext
    from gateway_svc.proxy.exchange_state import ExchangeState
    from gateway_svc.proxy.upstream import UpstreamConnection

log = logging.getLogger("gateway.server")

# Requests parsed ahead of the one being answered (pipelining): each holds an exchange,
# so a burst of tiny requests in one read is cut off here (429, then close).
MAX_PIPELINED = 32


class _HeadersTooLarge(Exception):
    pass


class _Refused(Exception):
    """A request head the gateway refuses: stop parsing, answer it in turn, close."""


class ClientConnection(asyncio.Protocol):
    def __init__(self, context: ProxyContext) -> None:
        self.context = context
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.peer = "unknown"
        self.parsing: Exchange | None = None  # the request being parsed
        self.last_head: Exchange | None = None  # the request whose head was parsed last
        self.starting: Exchange | None = None  # to start once this read is parsed
        self.held: Exchange | None = None  # an upgrade waiting for 101: it holds the bytes
        self.stopped = False  # a refused request: nothing after it is parsed
        self.lingering = 0.0  # when close() sent our FIN (the client may still send)
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
        self.forward_headers_limit = 4 * context.max_headers

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "unknown"
        context = self.context
        self.peer_bytes = self.peer.encode()
        self.peer_trusted = bool(context.trusted_proxies) and context.trusted_proxies.trusts(
            self.peer
        )
        self.ip_key = address_key(self.peer)
        self.forwarded_headers = (
            b"X-Forwarded-For: " + self.peer_bytes + b"\r\nX-Forwarded-Proto: http\r\n"
        )
        context.connections.add(self)
        # The first request head is due within the header timeout from the connect,
        # even before its target arrives (an idle new socket is not a kept-alive one).
        self.last_activity = self.head_started = context.loop.time()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        held = self.held
        if held is not None:
            # After an upgrade head, nothing goes upstream before its 101 (then the
            # tunnel sends it); if the upgrade is refused the connection closes.
            held.upgrade_rest += data
            if len(held.upgrade_rest) > PENDING_LIMIT:
                self.pause_reading()
            return
        if self.stopped:
            return
        upgrade_at = -1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            upgrade_at = upgrade.args[0]  # handled below, outside this except clause
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _Refused):
                self._stop_parsing()
            elif isinstance(cause, _HeadersTooLarge) and self.parsing is not None:
                self._reject(431, "The request has too many headers, or too large ones.")
            else:
                log.error("request handling failed", exc_info=cause or error)
                self._reject(500, "The gateway could not handle the request.")
        except httptools.HttpParserError:
            self._reject(400, "The request is not valid HTTP/1.1.")
        if upgrade_at >= 0:
            self._upgrade_requested(data[upgrade_at:])
        # Requests start once the whole read is parsed: a request whose head and a
        # broken body arrived together is refused before anything is forwarded.
        starting = self.starting
        if starting is not None:
            self.starting = None
            starting.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.context.connections.discard(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
        active = self.active
        if active is not None:
            self.active = None
            active.client_gone()
        if self.parsing is not None and self.parsing is not active:
            self.parsing = None
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
        if active is not None and active.upstream_connection is not None:
            active.upstream_connection.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.resume_reading()
            return
        active = self.active
        if active is not None:
            active.progress = self.context.loop.time()  # the client took bytes: progress
            if active.upstream_connection is not None:
                active.upstream_connection.resume()

    # -- httptools callbacks -------------------------------------------------------------------

    # No on_message_begin: httptools skips callbacks a protocol does not define, and
    # the first on_url of a message starts the exchange just as well.

    def on_url(self, url: bytes) -> None:
        parsing = self.parsing
        if parsing is None or parsing.method:
            parsing = self.parsing = Exchange(self)
            self.head_started = self.context.loop.time()
        parsing.url += url
        parsing.head_size += len(url)
        if parsing.head_size > self.context.max_header_bytes:
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        parsing = self.parsing
        assert parsing is not None
        parsing.head_size += len(name) + len(value) + 4
        if parsing.head_size > self.context.max_header_bytes:
            raise _HeadersTooLarge
        parsing.on_header(name, value)

    def on_headers_complete(self) -> None:
        parsing = self.parsing
        assert parsing is not None
        if len(parsing.forward_headers) >= self.forward_headers_limit:
            # Host plus the header lines to forward (4 items each in ``forward_headers``): never
            # more than an upstream accepts. Headers the gateway drops or merges are
            # bounded by GATEWAY_MAX_HEADER_BYTES.
            raise _HeadersTooLarge
        parser = self.parser
        parsing.method = parser.get_method()
        parsing.keep_alive = parser.should_keep_alive()
        version = parser.get_http_version()
        parsing.http11 = http11 = version == "1.1"
        refused = (
            (not http11 and version != "1.0")
            or parsing.method not in METHODS
            or parsing.transfer_coding is not None
            or parsing.upgrade is not None
            or parsing.refused is not None
        ) and parsing.check_head(version, parser.should_upgrade())
        self.head_started = 0.0
        self.last_head = parsing
        if self.active is None:
            self.active = self.starting = parsing
        else:
            if self.waiting is None:
                self.waiting = deque()
            elif len(self.waiting) >= MAX_PIPELINED and not refused:
                parsing.refuse(429, "Too many pipelined requests; send more after the answers.")
                refused = True
            self.waiting.append(parsing)
            self.pause_reading()  # one request at a time; the socket buffers the rest
        if refused:
            raise _Refused

    def on_body(self, body: bytes) -> None:
        parsing = self.parsing
        if parsing is not None:
            parsing.on_body(body)

    def on_message_complete(self) -> None:
        parsing = self.parsing
        if parsing is not None:
            self.parsing = None
            parsing.on_message_complete()

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

    def exchange_finished(self, exchange: ExchangeState) -> None:
        if self.active is not exchange:
            return
        self.active = None
        self.last_activity = self.context.loop.time()
        if exchange.close_after or not exchange.keep_alive:
            self.close()
            return
        waiting = self.waiting
        if waiting:
            next_exchange = waiting.popleft()
            self.active = next_exchange
            if not waiting:
                self.resume_reading()
            next_exchange.start()
        elif self.reading_paused and exchange.pending_size == 0:
            self.resume_reading()

    def start_tunnel(self, connection: UpstreamConnection) -> None:
        """After ``101 Switching Protocols``: relay raw bytes both ways until either side closes."""
        upstream_transport = connection.transport
        assert upstream_transport is not None
        self.held = None
        self.tunnel = upstream_transport
        connection.tunnel = self.transport
        self.active = None
        self.resume_reading()

    def close(self) -> None:
        """Close after what was written: our side first (FIN), then read and drop what
        the client still sends for a moment (the sweep aborts after LINGER_SECONDS), so
        an answer given before the request was read is not destroyed by a reset."""
        if self.closed:
            return
        self.closed = True  # nothing more is written
        self.stopped = True  # nor parsed
        self.held = None
        transport = self.transport
        if self.tunnel is None and transport.can_write_eof():
            self.lingering = self.context.loop.time()
            transport.write_eof()
            if self.reading_paused:
                self.reading_paused = False
                transport.resume_reading()
        else:
            transport.close()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    # -- errors and upgrades ----------------------------------------------------------------

    def _stop_parsing(self) -> None:
        """Nothing after a refused or broken request is read: the connection closes
        once the requests before it are answered."""
        self.stopped = True
        self.parsing = None
        self.pause_reading()

    def _reject(self, status: int, detail: str) -> None:
        """A request we cannot parse or serve: answer it in turn (if nothing was sent
        yet) and close."""
        # No current request: the bytes were to start a new one (garbage before its
        # request line still gets a 400, not a silent close).
        exchange = self.parsing or Exchange(self)
        self._stop_parsing()
        if exchange.response_started:
            self.abort()
            return
        exchange.refuse(status, detail)
        if self.active is None:
            self.active = exchange
        if self.active is exchange:
            if self.starting is exchange:
                self.starting = None
            exchange.answer_refusal()
        elif exchange.finished:
            self.abort()
        else:
            if self.waiting is None:
                self.waiting = deque()
            if exchange not in self.waiting:
                self.waiting.append(exchange)  # answered after the requests before it

    def _upgrade_requested(self, rest: bytes) -> None:
        """llhttp ended the request at its head (``Connection: upgrade``; a body was
        refused by :meth:`Exchange.check_head`)."""
        exchange = self.last_head
        self.parsing = None
        if exchange is None or exchange.finished:
            self.close()
            return
        if exchange.upgrade == b"websocket":
            # A WebSocket handshake (refused later if its route does not allow it):
            # what follows belongs to the tunnel, held until the upstream answers 101.
            self.held = exchange
            exchange.upgrade_rest += rest
            return
        # Another protocol (h2c): not an upgrade; parsing goes on as HTTP/1.1.
        self.parser = httptools.HttpRequestParser(self)
        if rest:
            self.data_received(rest)

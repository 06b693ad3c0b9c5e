"""Upstream side of the proxy: hosts with keep-alive pools, breakers and readiness
probers, the round-robin balancer (with Envoy's panic mode), and the protocol that reads
one upstream connection."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httptools

from gateway_svc.domain.breaker import CircuitBreaker, CircuitState
from gateway_svc.domain.routes import UpstreamConfig

if TYPE_CHECKING:
    from gateway_svc.proxy.upstream_leg import UpstreamLeg

log = logging.getLogger("gateway.upstream")


class UpstreamHost:
    """One upstream base URL: its idle connections, its breaker, its counters."""

    __slots__ = (
        "group",
        "url",
        "host",
        "port",
        "authority",
        "connect_timeout",
        "idle",
        "max_idle",
        "breaker",
        "probe_request",
        "probe_interval",
        "prober",
        "in_flight",
        "connections",
        "ok",
        "panicked",
    )

    def __init__(self, group: str, url: str, config: UpstreamConfig, max_idle: int) -> None:
        parts = urlsplit(url)
        self.group = group
        self.url = url.rstrip("/")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.authority = parts.netloc.encode()
        self.connect_timeout = config.connect_timeout
        self.idle: deque[UpstreamConnection] = deque()
        self.max_idle = max_idle
        breaker = config.breaker
        self.breaker = CircuitBreaker(
            breaker.failures, breaker.open_seconds, breaker.max_open_seconds
        )
        self.probe_request = (
            b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % (breaker.probe_path.encode(), self.authority)
            if breaker.probe_path
            else None
        )
        self.probe_interval = breaker.probe_interval
        self.prober = False  # a readiness prober runs for this host (one per host and process)
        self.in_flight = 0
        self.connections = 0
        self.ok = 0  # successful responses (counted here: the hot path's cheapest place)
        self.panicked = 0  # requests routed here in panic (every host of the group out)

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()  # the most recently used connection is the warmest
            if not conn.closed:
                return conn
        return None

    def put_idle(self, conn: UpstreamConnection, now: float) -> None:
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    def close_idle_before(self, cutoff: float) -> None:
        idle = self.idle
        while idle and (idle[0].closed or idle[0].idle_since < cutoff):
            idle.popleft().close()

    def close_all(self) -> None:
        while self.idle:
            self.idle.popleft().close()

    @property
    def healthy(self) -> bool:
        return self.breaker.state is CircuitState.CLOSED

    def needs_prober(self) -> bool:
        return not self.prober and self.probe_request is not None and not self.healthy

    async def probe_until_closed(self) -> None:
        """While the circuit is not closed, ask the host's readiness path every
        ``probe_interval`` s on a fresh connection; its first 200 closes the circuit.
        (Started by the gateway's ticker; ends when the circuit closes, by this probe or
        by a real response; the ticker sets ``prober`` before starting it.)"""
        try:
            while not self.healthy:
                await asyncio.sleep(self.probe_interval)
                if self.healthy:
                    break
                if await self._ready():
                    log.info("upstream ready again", extra={"upstream": self.url})
                    self.breaker.recovered()
        finally:
            self.prober = False

    async def _ready(self) -> bool:
        """One readiness request: its status line says 200 within the probe interval."""
        assert self.probe_request is not None
        writer = None
        try:
            async with asyncio.timeout(max(self.probe_interval, 0.2)):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(self.probe_request)
                status_line = await reader.readline()
        except (OSError, TimeoutError):
            return False
        finally:
            if writer is not None:
                writer.transport.abort()  # nothing more to read; no TIME_WAIT per probe
        parts = status_line.split(None, 2)
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"

    def describe(self, now: float) -> dict[str, Any]:
        breaker = self.breaker
        return {
            "url": self.url,
            "healthy": self.healthy,
            "circuit": breaker.state.name.lower(),
            "consecutive_failures": breaker.consecutive,
            "retry_after": round(breaker.retry_after(now), 3),
            "in_flight": self.in_flight,
            "idle_connections": len(self.idle),
            "open_connections": self.connections,
        }


class UpstreamGroup:
    """The hosts behind one upstream name, chosen round-robin (or by client IP when
    sticky); hosts whose circuit is open are skipped (passive health) — unless every
    host is out, when they are all used anyway (panic: a refusal is certain, a host that
    just came back may answer)."""

    __slots__ = ("name", "hosts", "panic", "_next")

    def __init__(self, name: str, config: UpstreamConfig, max_idle: int) -> None:
        self.name = name
        self.hosts = [UpstreamHost(name, url, config, max_idle) for url in config.urls]
        self.panic = config.breaker.panic
        self._next = 0

    def choose(
        self, now: float, exclude: Iterable[UpstreamHost] = (), sticky_key: bytes | None = None
    ) -> UpstreamHost | None:
        hosts = self.hosts
        count = len(hosts)
        if sticky_key is not None:
            start = zlib.crc32(sticky_key) % count
        else:
            start = self._next
            self._next = (start + 1) % count
        for step in range(count):
            host = hosts[(start + step) % count]
            if host in exclude:
                continue
            if host.breaker.allow(now):
                return host
        if self.panic:
            for step in range(count):
                host = hosts[(start + step) % count]
                if host not in exclude:
                    host.panicked += 1
                    return host
        return None

    def retry_after(self, now: float) -> float:
        waits = [host.breaker.retry_after(now) for host in self.hosts]
        return min(waits) if waits else 1.0


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream, carrying one exchange at a time.

    Response bytes are parsed with httptools and handed to the attached exchange;
    what the exchange writes to its client during one read is sent with a single
    ``writelines`` call (one syscall for head and body in the common case).
    """

    __slots__ = (
        "upstream",
        "transport",
        "parser",
        "exchange",
        "closed",
        "idle_since",
        "served",
        "got_bytes",
        "tunnel",
        "reading_paused",
        "feeding",
        "release_at",
    )

    def __init__(self, upstream: UpstreamHost) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: UpstreamLeg | None = None
        self.closed = False
        self.idle_since = 0.0
        self.served = 0
        self.got_bytes = False
        self.tunnel: asyncio.Transport | None = None
        self.reading_paused = False
        self.feeding = False  # inside data_received: the read is not fully parsed yet
        self.release_at = 0.0  # a release to the pool, waiting for the read's end

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.upstream.connections += 1

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the upstream broke framing. Drop it.
            self.close()
            return
        self.got_bytes = True
        exchange.out_begin()
        self.feeding = True
        try:
            self.parser.feed_data(data)
            if exchange.status == 101 and self.tunnel is None and self.exchange is exchange:
                exchange.on_upstream_upgraded(self, b"")
        except httptools.HttpParserUpgrade as upgrade:
            exchange.on_upstream_upgraded(self, data[upgrade.args[0] :])
        except httptools.HttpParserError:
            if self.exchange is not exchange:
                # Bytes past the end of the response the exchange already got (see
                # on_message_begin): the connection's framing is lost, drop it.
                self.close()
                return
            exchange.on_upstream_broken(self, "the upstream sent a malformed response")
        finally:
            self.feeding = False
            exchange.out_flush()
            release_at = self.release_at
            if release_at:
                # pooled only once the whole read parsed cleanly: bytes after the end
                # of the response (a second response) closed it above instead
                self.release_at = 0.0
                if not self.closed and self.exchange is None and self.tunnel is None:
                    self.upstream.put_idle(self, release_at)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.upstream.connections -= 1
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost(self)

    def pause_writing(self) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.pause_reading()  # a WebSocket upstream that reads slowly slows the client
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.conn.pause_reading()

    def resume_writing(self) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.resume_reading()
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.conn.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # A second response in the same read as the first one's end: no request
            # asked for it. Never let it wait in the pool for the next request.
            raise ValueError("response bytes without a request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.exchange.on_upstream_header(name, value)  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.exchange.on_upstream_headers_complete(  # type: ignore[union-attr]
            self, parser.get_status_code(), parser.should_keep_alive()
        )

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:  # None: the gateway answered instead (the body is dropped)
            exchange.on_upstream_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_upstream_complete(self)

    # -- helpers ---------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop reading the response: the client is not taking it."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def release(self, now: float) -> None:
        """Back to the pool after a complete response — but not before the rest of the
        read that carried its end is parsed: no request may take a connection whose
        framing is not yet known to be intact."""
        if self.feeding:
            self.release_at = now
        else:
            self.upstream.put_idle(self, now)

    def reset_parser(self) -> None:
        """A fresh parser (after a HEAD response, whose body the old parser would await)."""
        self.parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.upstream.connections -= 1
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.upstream.connections -= 1
        if self.transport is not None:
            self.transport.abort()

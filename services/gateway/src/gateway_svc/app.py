"""The only wiring place: :func:`create_app` builds a :class:`Gateway` from settings.

The gateway is not an aiohttp ``web.Application``: its hot path is a lean
HTTP/1.1 proxy on httptools and (under ``python -m gateway_svc``) uvloop, because
an aiohttp request/response cycle per proxied request costs more than the whole
budget (see the README's performance section). It still speaks the suite's
conventions: problem+json from ``switchyard.problems``, ``X-Request-ID`` on every
response, /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from gateway_svc.accesslog import AccessLog
from gateway_svc.adapters.limiter_store import LocalStore, RedisStore
from gateway_svc.adapters.token_cache import CachedVerifier
from gateway_svc.domain.routes import RouteTable, load_route_file
from gateway_svc.entrypoints.admin import AdminEndpoints
from gateway_svc.metrics import GatewayMetrics
from gateway_svc.proxy.admission import Admission
from gateway_svc.proxy.context import ProxyContext
from gateway_svc.proxy.edges import Cors, RequestIds, TrustedProxies
from gateway_svc.proxy.exchange_state import ExchangeState
from gateway_svc.proxy.headers import LOCAL_PATHS, PUBLIC_LOCAL_PATHS
from gateway_svc.proxy.server import ClientConnection
from gateway_svc.proxy.upstream import UpstreamGroup, UpstreamHost
from gateway_svc.settings import GatewaySettings
from gateway_svc.spans import SpanRecorder
from switchyard.authn import token_verifier
from switchyard.bus.app import bus_for
from switchyard.bus.connection import TRANSIENT_ERRORS
from switchyard.metrics import Metrics, MetricsRegistry
from switchyard.revocation import RevocationFeed, deny_list_for, feed_for
from switchyard.tokens import TokenVerifier

log = logging.getLogger("gateway")

TICK_SECONDS = 0.1
BUS_RETRY_SECONDS = 1.0  # between attempts to reach the broker (each retries 30 s itself)
LINGER_SECONDS = 2.0  # a closed client connection drains what the client still sends


def listen_socket(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048
) -> socket.socket:
    """A listening TCP socket; with ``reuse_port`` several processes share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class Gateway:
    """Everything one gateway worker holds: routes, upstream pools, verifier, limiter."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        verifier: TokenVerifier | None = None,
        local_limiter: LocalStore | None = None,
        metrics_dir: Path | None = None,
        spans: SpanRecorder | None = None,
    ) -> None:
        self.settings = settings
        self.table = RouteTable(load_route_file(settings.routes_file, settings.upstream_overrides))
        self.groups = {
            name: UpstreamGroup(name, config, settings.upstream_max_idle)
            for name, config in self.table.source.upstreams.items()
        }
        self.verifier = verifier or token_verifier(settings)
        # Revoked sessions (DESIGN §3.1 auth.session.revoked): every worker keeps its own
        # deny-list, fed by its own queue and auth's list; verified or cached, a token of a
        # revoked session is refused (one lookup).
        self.deny_list = deny_list_for(settings, self.verifier)
        # The bus only feeds the deny-list here (and parks a poison message): its publishing
        # counters stay off the gateway's /metrics.
        self.bus = bus_for(settings, Metrics(settings.service_name))
        self.revocations: RevocationFeed = feed_for(settings, self.bus, self.deny_list)
        self.tokens = CachedVerifier(self.verifier, settings.token_cache_size)
        self.limiter = local_limiter or LocalStore(settings.rate_limit_local_slots)
        self.limiter_async = (
            RedisStore(settings.rate_limit_redis_url, settings.rate_limit_key_prefix, self.limiter)
            if settings.rate_limit_redis_url
            else None
        )
        self.metrics = GatewayMetrics(
            MetricsRegistry(settings.service_name), hosts=self._hosts, snapshot_dir=metrics_dir
        )
        self.access_log = AccessLog(settings.access_log, settings.service_name)
        # Built here, in the worker (after the fork): the exporter's thread is per process.
        self.spans = spans or SpanRecorder.from_environment(settings.service_name)
        self.cors = Cors(settings.cors_origins)
        self.trusted_proxies = TrustedProxies(settings.trusted_proxies)
        self.request_ids = RequestIds()
        self.admission = Admission(
            self.tokens, self.limiter, self.limiter_async, self.cors, self.metrics
        )
        self.admin = AdminEndpoints(
            routes=self.table,
            upstreams=self.groups,
            verifier=self.verifier,
            tokens=self.tokens,
            redis=self.limiter_async,
            metrics=self.metrics,
            revocations=self.revocations,
        )
        self.connections: set[ClientConnection] = set()
        self.in_flight: set[ExchangeState] = set()  # requests waiting on an upstream (timeouts)
        self.context: ProxyContext | None = None  # built by start(), once the loop runs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._admin_server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._taking_tokens = asyncio.Event()  # set with admission.revocations_known
        self._queue_bound = asyncio.Event()  # the revocation queue hears the bus
        self.port = settings.port
        self.admin_port = settings.admin_port

    def _busy(self) -> bool:
        return any(conn.active is not None for conn in self.connections)

    def _hosts(self) -> Iterator[UpstreamHost]:
        for group in self.groups.values():
            yield from group.hosts

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the gateway is not started")
        return self._loop

    def _proxy_context(self, loop: asyncio.AbstractEventLoop) -> ProxyContext:
        """What the proxy's connections and exchanges get (instead of the gateway)."""
        settings = self.settings
        return ProxyContext(
            loop=loop,
            routes=self.table,
            upstreams=self.groups,
            admission=self.admission,
            admin=self.admin,
            cors=self.cors,
            trusted_proxies=self.trusted_proxies,
            request_ids=self.request_ids,
            metrics=self.metrics,
            access_log=self.access_log,
            spawn=self.spawn,
            connections=self.connections,
            in_flight=self.in_flight,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            local_paths=PUBLIC_LOCAL_PATHS,
            spans=self.spans,
        )

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        host = self.settings.admin_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.admin_port}"

    async def start(
        self, sock: socket.socket | None = None, admin_sock: socket.socket | None = None
    ) -> Gateway:
        """Listen on ``sock`` (public) and ``admin_sock`` (admin), or on sockets of the
        settings' ports. Several workers share one admin socket (made before they fork):
        whichever accepts answers, its /metrics summing every worker's snapshot."""
        loop = self._loop = asyncio.get_running_loop()
        context = self.context = self._proxy_context(loop)
        admin_context = dataclasses.replace(context, local_paths=LOCAL_PATHS, proxies=False)
        await self.verifier.start()
        # The broker only feeds revocations here: the gateway serves without it (auth's list
        # read over HTTP every few seconds meanwhile), connecting in the background.
        self.revocations.poll_until_started()
        if sock is None:
            sock = listen_socket(self.settings.host, self.settings.port)
        self.port = sock.getsockname()[1]
        self._server = await loop.create_server(lambda: ClientConnection(context), sock=sock)
        if admin_sock is None:
            admin_sock = listen_socket(self.settings.admin_host, self.settings.admin_port)
        self.admin_port = admin_sock.getsockname()[1]
        self._admin_server = await loop.create_server(
            lambda: ClientConnection(admin_context), sock=admin_sock
        )
        self._ticker = asyncio.create_task(self._tick(), name="gateway-tick")
        self.spawn(self._note_revocations_read())
        self.spawn(self._follow_revocations())
        log.info(
            "gateway listening",
            extra={"url": self.url, "admin": self.admin_url, "routes": len(self.table.routes)},
        )
        return self

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` seconds), close."""
        grace = self.settings.shutdown_timeout if grace is None else grace
        for server in (self._server, self._admin_server):
            if server is not None:
                server.close()
        for conn in list(self.connections):
            if conn.active is None and conn.tunnel is None:
                conn.close()
        deadline = self.loop.time() + grace
        while self._busy() and self.loop.time() < deadline:  # noqa: ASYNC110 - polls many connections
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for host in self._hosts():
            host.close_all()
        await self.verifier.close()
        await self.revocations.stop()
        await self.bus.close()
        if self.limiter_async is not None:
            await self.limiter_async.close()
        self.access_log.close()
        if self.spans is not None:
            await asyncio.to_thread(self.spans.close)  # the last batch, exported
        for server in (self._server, self._admin_server):
            if server is not None:
                await server.wait_closed()

    async def _follow_revocations(self) -> None:
        """Connect the bus and start the revocation queue, retrying until the broker is
        there (each attempt retries for 30 s itself); cancelled by :meth:`stop`."""
        connected = False
        while True:
            try:
                if not connected:
                    await self.bus.connect()
                    connected = True
                await self.revocations.start()
            except TRANSIENT_ERRORS as error:
                log.warning(
                    "the broker is unreachable; reading revocations over HTTP, retrying",
                    extra={"error": repr(error)[:300], "retry_in": BUS_RETRY_SECONDS},
                )
                await asyncio.sleep(BUS_RETRY_SECONDS)
            else:
                self._queue_bound.set()
                return

    async def _note_revocations_read(self) -> None:
        """Until its first read of auth's revoked sessions the worker takes no token (503):
        it could not tell a revoked session's token from a live one (a plain bool after)."""
        await self.revocations.fetched.wait()
        self.admission.revocations_known = True
        self._taking_tokens.set()
        log.info("revoked sessions read; taking bearer tokens")

    async def revocations_read(self, timeout: float = 15.0, *, queue: bool = True) -> None:
        """Wait until this gateway takes bearer tokens and (``queue``) its revocation queue
        hears the bus (tests and benchmarks, after start())."""
        async with asyncio.timeout(timeout):
            await self._taking_tokens.wait()
            if queue:
                await self._queue_bound.wait()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a slow-path step in a task; its failure is logged, never lost."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway task failed", exc_info=task.exception())

    async def _tick(self) -> None:
        """Timeouts, batching and housekeeping: a watchdog for requests waiting on an
        upstream (0.1 s resolution, instead of a timer per request), readiness probers
        for open circuits, access-log flush, idle sweeps, metrics snapshots."""
        settings = self.settings
        ticks = 0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            ticks += 1
            now = self.loop.time()
            expired = []
            for exchange in self.in_flight:
                if not exchange.body_done and now - exchange.sent_at > settings.body_timeout:
                    expired.append(exchange)  # a body trickling in: an overall deadline
                elif exchange.bytes_out != exchange.bytes_seen:
                    # Response bytes flowed since the last tick: progress (counted here,
                    # not per body piece on the hot path).
                    exchange.bytes_seen = exchange.bytes_out
                    exchange.progress = now
                elif (route := exchange.route) is not None and now - exchange.progress >= (
                    route.timeout
                ):
                    expired.append(exchange)
            for exchange in expired:
                if exchange.watched:
                    exchange.timed_out(now)
            for host in self._hosts():
                if host.needs_prober():  # a circuit opened: probe its readiness until it closes
                    host.prober = True
                    self.spawn(host.probe_until_closed())
            self.access_log.flush()
            if ticks % 10:
                continue
            for conn in list(self.connections):
                if conn.tunnel is not None:
                    continue
                if conn.lingering:
                    if now - conn.lingering > LINGER_SECONDS:
                        conn.abort()
                    continue
                active = conn.active
                if active is not None:
                    if active.discard_body and now > active.discard_until:
                        conn.abort()  # answered early; the rest of the body never came
                    continue
                if conn.head_started and now - conn.head_started > settings.header_timeout:
                    conn.abort()  # a request head trickling in (slowloris)
                elif conn.parsing is None and now - conn.last_activity > settings.keepalive_timeout:
                    conn.close()
            cutoff = now - settings.upstream_idle_timeout
            for host in self._hosts():
                host.close_idle_before(cutoff)
            try:
                self.metrics.write_snapshot()
            except OSError as error:
                log.warning("could not write the metrics snapshot", extra={"error": repr(error)})


def create_app(
    settings: GatewaySettings,
    *,
    verifier: TokenVerifier | None = None,
    local_limiter: LocalStore | None = None,
    metrics_dir: Path | None = None,
    spans: SpanRecorder | None = None,
) -> Gateway:
    """Build a gateway (not started: ``await gateway.start()``). Its server spans go to
    ``spans``, else over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else nowhere."""
    return Gateway(
        settings,
        verifier=verifier,
        local_limiter=local_limiter,
        metrics_dir=metrics_dir,
        spans=spans,
    )

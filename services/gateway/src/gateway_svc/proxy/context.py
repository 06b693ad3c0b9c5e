"""What the proxy's connections and exchanges need from the gateway, and nothing more.

Built by :meth:`gateway_svc.app.Gateway.start` once the event loop runs; the proxy
modules never see the :class:`~gateway_svc.app.Gateway` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway_svc.accesslog import AccessLog
    from gateway_svc.domain.routes import RouteTable
    from gateway_svc.entrypoints.admin import AdminEndpoints
    from gateway_svc.metrics import GatewayMetrics
    from gateway_svc.proxy.admission import Admission
    from gateway_svc.proxy.edges import Cors, RequestIds, TrustedProxies
    from gateway_svc.proxy.exchange_state import ExchangeState
    from gateway_svc.proxy.server import ClientConnection
    from gateway_svc.proxy.upstream import UpstreamGroup
    from gateway_svc.spans import SpanRecorder


@dataclass(slots=True, eq=False)
class ProxyContext:
    loop: asyncio.AbstractEventLoop
    routes: RouteTable
    upstreams: dict[str, UpstreamGroup]
    admission: Admission
    admin: AdminEndpoints
    cors: Cors
    trusted_proxies: TrustedProxies
    request_ids: RequestIds
    metrics: GatewayMetrics
    access_log: AccessLog
    spawn: Callable[[Coroutine[Any, Any, None]], None]  # a slow-path step, in a task
    connections: set[ClientConnection]  # open client connections
    in_flight: set[ExchangeState]  # requests waiting on an upstream (the watchdog's set)
    max_header_bytes: int
    max_headers: int
    header_timeout: float  # also how long the rest of an answered request's body may take
    # The gateway's own endpoints this listener serves (the rest of LOCAL_PATHS: 404), and
    # whether it proxies at all (the admin listener does not).
    local_paths: frozenset[bytes]
    proxies: bool = True
    spans: SpanRecorder | None = None  # the gateway's server spans, when exported

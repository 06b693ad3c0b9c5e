"""The gateway's own endpoints: /healthz, /readyz, /metrics and the admin-only
GET /gateway/routes (the route table with live upstream health)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway_svc.proxy.edges import bearer_token
from gateway_svc.proxy.responses import unauthorized
from switchyard.tokens import InvalidToken, TokenVerifier

if TYPE_CHECKING:
    from gateway_svc.adapters.limiter_store import RedisStore
    from gateway_svc.adapters.token_cache import CachedVerifier
    from gateway_svc.domain.routes import RouteTable
    from gateway_svc.metrics import GatewayMetrics
    from gateway_svc.proxy.exchange import Exchange
    from gateway_svc.proxy.upstream import UpstreamGroup
    from switchyard.revocation import RevocationFeed

log = logging.getLogger("gateway.admin")

READINESS_TIMEOUT = 2.0


class AdminEndpoints:
    def __init__(
        self,
        *,
        routes: RouteTable,
        upstreams: dict[str, UpstreamGroup],
        verifier: TokenVerifier,
        tokens: CachedVerifier,
        redis: RedisStore | None,
        metrics: GatewayMetrics,
        revocations: RevocationFeed | None = None,
    ) -> None:
        self.routes = routes
        self.revocations = revocations
        self.upstreams = upstreams
        self.verifier = verifier
        self.tokens = tokens
        self.redis = redis
        self.metrics = metrics

    def handle(self, exchange: Exchange) -> None:
        path = exchange.path
        exchange.route_name = "gateway:" + path.decode()
        if exchange.method not in (b"GET", b"HEAD"):
            exchange.problem(
                405,
                f"{exchange.method.decode('latin-1')} is not allowed here.",
                headers=b"Allow: GET, HEAD\r\n",
            )
        elif path == b"/healthz":
            exchange.respond_json(200, {"status": "ok"})
        elif path == b"/metrics":
            exchange.respond(200, b"", self.metrics.render(), CONTENT_TYPE_LATEST.encode())
        elif path == b"/readyz":
            exchange.context.spawn(self._readyz(exchange))
        else:
            exchange.context.spawn(self._routes(exchange))

    async def _readyz(self, exchange: Exchange) -> None:
        checks: dict[str, str] = {}
        keys = self.verifier.keys
        has_keys = getattr(keys, "has_keys", None)
        # Check names and ok/failing only (DESIGN §4: no internal names); why goes to the log.
        checks["jwks"] = "ok" if has_keys is None or has_keys else "failing"
        if checks["jwks"] != "ok":
            log.warning("readiness check failing", extra={"check": "jwks", "error": "no keys yet"})
        revocations = self.revocations
        if revocations is not None:
            # Until auth's list of revoked sessions has been read once, this process would
            # accept their tokens: no traffic for it yet (a restarted replica is not blind).
            checks["revocations"] = "ok" if revocations.fetches else "failing"
            if not revocations.fetches:
                log.warning(
                    "readiness check failing",
                    extra={"check": "revocations", "error": "revoked sessions not read yet"},
                )
        redis = self.redis
        if redis is not None:
            try:
                await asyncio.wait_for(redis.ping(), READINESS_TIMEOUT)
                checks["redis"] = "ok"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure means "not ready"
                checks["redis"] = "failing"
                log.warning(
                    "readiness check failing", extra={"check": "redis", "error": repr(error)}
                )
        if all(value == "ok" for value in checks.values()):
            exchange.respond_json(200, {"status": "ready", "checks": checks})
        else:
            exchange.problem(
                503,
                "A dependency of the gateway is unreachable.",
                slug="not-ready",
                extra={"checks": checks},
                headers=b"Retry-After: 5\r\n",
            )

    async def _routes(self, exchange: Exchange) -> None:
        token = bearer_token(exchange.authorization) if exchange.authorization is not None else None
        if token is None:
            exchange.answer(unauthorized("This endpoint needs an administrator's bearer token."))
            return
        try:
            caller = await self.tokens.verify_async(token)
        except InvalidToken as error:
            exchange.answer(unauthorized(error.detail))
            return
        exchange.caller = caller
        if not caller.is_admin:
            exchange.problem(403, "This endpoint is for administrators.")
            return
        now = asyncio.get_running_loop().time()
        exchange.respond_json(
            200,
            {
                "worker_pid": os.getpid(),
                "routes": self.routes.describe(),
                "upstreams": {
                    name: [host.describe(now) for host in group.hosts]
                    for name, group in self.upstreams.items()
                },
            },
        )

"""The gateway's own endpoints: /healthz, /readyz, /metrics and the admin-only
GET /gateway/routes (the route table with live upstream health)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway_svc.proxy.edges import bearer_token
from switchyard.tokens import InvalidToken

if TYPE_CHECKING:
    from gateway_svc.app import Gateway
    from gateway_svc.proxy.exchange import Exchange

log = logging.getLogger("gateway.admin")

READINESS_TIMEOUT = 2.0


class AdminEndpoints:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def handle(self, ex: Exchange) -> None:
        path = ex.path
        ex.route_name = "gateway:" + path.decode()
        if ex.method not in (b"GET", b"HEAD"):
            ex.problem(
                405,
                f"{ex.method.decode('latin-1')} is not allowed here.",
                headers=b"Allow: GET, HEAD\r\n",
            )
        elif path == b"/healthz":
            ex.respond_json(200, {"status": "ok"})
        elif path == b"/metrics":
            ex.respond(200, b"", self.gw.metrics.render(), CONTENT_TYPE_LATEST.encode())
        elif path == b"/readyz":
            self.gw.spawn(self._readyz(ex))
        else:
            self.gw.spawn(self._routes(ex))

    async def _readyz(self, ex: Exchange) -> None:
        checks: dict[str, str] = {}
        keys = self.gw.verifier.keys
        has_keys = getattr(keys, "has_keys", None)
        # Check names and ok/failing only (DESIGN §4: no internal names); why goes to the log.
        checks["jwks"] = "ok" if has_keys is None or has_keys else "failing"
        if checks["jwks"] != "ok":
            log.warning("readiness check failing", extra={"check": "jwks", "error": "no keys yet"})
        redis = self.gw.limiter_async
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
            ex.respond_json(200, {"status": "ready", "checks": checks})
        else:
            ex.problem(
                503,
                "A dependency of the gateway is unreachable.",
                slug="not-ready",
                extra={"checks": checks},
                headers=b"Retry-After: 5\r\n",
            )

    async def _routes(self, ex: Exchange) -> None:
        token = bearer_token(ex.authorization) if ex.authorization is not None else None
        if token is None:
            ex.problem(
                401,
                "This endpoint needs an administrator's bearer token.",
                slug="invalid-token",
                headers=b'WWW-Authenticate: Bearer error="invalid_token"\r\n',
            )
            return
        try:
            caller = await self.gw.tokens.verify_async(token)
        except InvalidToken as error:
            ex.problem(
                401,
                error.detail,
                slug="invalid-token",
                headers=b'WWW-Authenticate: Bearer error="invalid_token"\r\n',
            )
            return
        ex.caller = caller
        if not caller.is_admin:
            ex.problem(403, "This endpoint is for administrators.")
            return
        gw = self.gw
        now = gw.loop.time()
        ex.respond_json(
            200,
            {
                "worker_pid": os.getpid(),
                "routes": gw.table.describe(),
                "upstreams": {
                    name: [host.describe(now) for host in group.hosts]
                    for name, group in gw.groups.items()
                },
            },
        )

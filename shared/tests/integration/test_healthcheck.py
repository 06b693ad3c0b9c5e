"""The container health check (the one Dockerfile's HEALTHCHECK) against a real server."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from aiohttp import web

from switchyard.ports import SERVICE_PORTS, service_port
from switchyard.testing.servers import free_port

pytestmark = pytest.mark.integration


async def _check(service: str, env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchyard.devtools.healthcheck",
        env={**os.environ, "SERVICE": service, **env},
    )
    return await process.wait()


async def test_healthy_only_when_the_service_port_answers_200(start_app) -> None:
    statuses = {"code": 200}

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=statuses["code"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await start_app(app)
    port = {"NOTIFICATION_PORT": str(server.port)}
    assert await _check("notification", port) == 0
    statuses["code"] = 503
    assert await _check("notification", port) == 1
    assert await _check("notification", {"NOTIFICATION_PORT": str(free_port())}) == 1


def test_the_port_is_the_services_default_unless_overridden() -> None:
    assert service_port("payments", {}) == SERVICE_PORTS["payments"] == 8083
    assert service_port("payments", {"PAYMENTS_PORT": "9999"}) == 9999

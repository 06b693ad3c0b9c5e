"""Real servers on loopback for the gateway's tests: an echo upstream (aiohttp), the shared
test JWKS server (``switchyard.testing.JwksServer``, which also lists revoked sessions), and
gateways built from a test route table, following revocations on the real broker (a test's
own exchange)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway_svc.app import Gateway, create_app
from gateway_svc.settings import GatewaySettings
from switchyard.testing import JwksServer
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.testing.servers import delete_exchange, free_port

ISSUER = "http://localhost:8081"
AUDIENCE = "switchyard"


@dataclass
class Upstream:
    """What the echo upstream saw: every request, by path."""

    url: str = ""
    hits: list[dict[str, Any]] = field(default_factory=list)

    def count(self, path: str, method: str | None = None) -> int:
        return sum(
            1
            for hit in self.hits
            if hit["path"] == path and (method is None or hit["method"] == method)
        )


def echo_app(record: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        hasher = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(256 * 1024):
            hasher.update(chunk)
            size += len(chunk)
        hit = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "body_bytes": size,
            "body_sha256": hasher.hexdigest(),
        }
        record.hits.append(hit)
        if "sleep" in request.query:
            await asyncio.sleep(float(request.query["sleep"]))
        if "crash" in request.query:
            assert request.transport is not None
            request.transport.abort()  # close without an answer
            await asyncio.sleep(0.1)
        status = int(request.query.get("status", "200"))
        if "size" in request.query:
            response = web.StreamResponse(status=status)
            await response.prepare(request)
            left = int(request.query["size"])
            block = b"x" * 65536
            while left > 0:
                await response.write(block[: min(left, len(block))])
                left -= len(block)
            await response.write_eof()
            return response
        response = web.json_response(hit, status=status)
        if "outcome" in request.query:  # as auth answers a credential check
            response.headers["X-Auth-Outcome"] = request.query["outcome"]
        return response

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def upstream(start_app: Callable[[web.Application], Awaitable[Any]]) -> Upstream:
    record = Upstream()
    server = await start_app(echo_app(record))
    record.url = server.url
    return record


# The gateway tests' name for the shared test key server (tokens, forgeries, rotation).
Keys = JwksServer


@pytest.fixture
async def keys() -> AsyncIterator[JwksServer]:
    async with JwksServer(issuer=ISSUER, audience=AUDIENCE) as server:
        yield server


def dead_url() -> str:
    """An address where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


def route_table(main: str, **groups: list[str]) -> dict[str, Any]:
    """The test route table: one route per behaviour under test."""
    upstreams: dict[str, Any] = {
        "main": {
            "urls": [main],
            "connect_timeout": 0.5,
            "breaker": {"failures": 3, "open_seconds": 1},
        }
    }
    for name, urls in groups.items():
        upstreams[name] = {
            "urls": urls,
            "connect_timeout": 0.5,
            "breaker": {"failures": 3, "open_seconds": 1},
        }
    table: dict[str, Any] = {
        "upstreams": upstreams,
        "rate_limits": {
            "default": {"limit": 1000, "window": 60},
            "tight": {"limit": 3, "window": 1},
            "login": {"limit": 2, "window": 60, "per": "address"},
            "login-account": {"limit": 2, "window": 60},
        },
        "defaults": {"timeout": 2, "max_body_bytes": 1024 * 1024},
        "routes": [
            {
                "name": "login",
                "upstream": "main",
                "paths": ["/api/v1/auth/login"],
                "methods": ["POST"],
                "auth": "public",
                "rate_limit": "login",
                # failed checks (X-Auth-Outcome from the upstream) per (account, address)
                "outcome": {"failure_cost": 1, "account_limit": "login-account"},
            },
            {"name": "public", "upstream": "main", "prefix": "/public", "auth": "public"},
            {
                "name": "tight",
                "upstream": "main",
                "prefix": "/tight",
                "auth": "public",
                "rate_limit": "tight",
            },
            {"name": "protected", "upstream": "main", "prefix": "/api/v1/chat"},
            {"name": "admin-only", "upstream": "main", "prefix": "/admin", "auth": "admin"},
            {
                "name": "upload",
                "upstream": "main",
                "prefix": "/upload",
                "max_body_bytes": 200 * 1024 * 1024,
                "timeout": 30,
                "auth": "public",
            },
            {
                "name": "small",
                "upstream": "main",
                "prefix": "/small",
                "max_body_bytes": 1024,
                "auth": "public",
            },
            {
                "name": "slow",
                "upstream": "main",
                "prefix": "/slow",
                "timeout": 0.5,
                "auth": "public",
            },
            {
                "name": "ws",
                "upstream": "main",
                "prefix": "/ws",
                "auth": "public",
                "websocket": True,
            },
            {
                "name": "signed",
                "upstream": "main",
                "prefix": "/api/v1/files/",
                "methods": ["GET"],
                "when_query": ["signature"],
                "auth": "public",
            },
            {"name": "files", "upstream": "main", "prefix": "/api/v1/files"},
        ],
    }
    for name in groups:
        table["routes"].append(
            {"name": name, "upstream": name, "prefix": f"/{name}", "auth": "public"}
        )
    return table


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def bus_settings(amqp_url: str, unique_name: str) -> AsyncIterator[dict[str, Any]]:
    """The broker settings of a test's gateways: its own exchange (deleted afterwards)."""
    exchange = f"switchyard.events.{unique_name}"
    yield {
        "amqp_url": amqp_url,
        "bus_exchange": exchange,
        "bus_queue_prefix": f"{unique_name}.",
        "bus_queue_expires_ms": 60_000,
        "bus_queue_type": "classic",
        "internal_api_token": TEST_INTERNAL_TOKEN,
    }
    await delete_exchange(amqp_url, exchange)


@pytest.fixture
async def make_gateway(
    tmp_path: Path, keys: Keys, bus_settings: dict[str, Any]
) -> AsyncIterator[GatewayFactory]:
    """``gateway = await make_gateway(table, **settings)``: a started gateway on a free port."""
    started: list[Gateway] = []

    async def make(table: dict[str, Any], **overrides: Any) -> Gateway:
        path = tmp_path / f"routes-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(table))
        options: dict[str, Any] = {
            **bus_settings,
            "environment": "test",
            "port": free_port(),
            "admin_port": 0,  # the admin listener on any free port
            "routes_file": path,
            "jwks_url": keys.jwks_url,
            "auth_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "cors_origins": ["https://app.example"],
            "access_log": str(tmp_path / "access.log"),
            "shutdown_timeout": 1.0,
        }
        options.update(overrides)
        gateway = create_app(GatewaySettings(**options))
        await gateway.start()
        started.append(gateway)
        if not {"revoked_sessions_url", "amqp_url"} & overrides.keys():  # not cut off
            await gateway.revocations_read()  # it takes bearer tokens from then on
        return gateway

    yield make
    for gateway in reversed(started):
        await gateway.stop(grace=0.5)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class GatewayProcess:
    """``python -m gateway_svc`` as a child process (for memory and multi-process tests)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"  # /metrics, /gateway/routes
        self.log_path = log_path
        full_env = {
            **os.environ,
            **env,
            "GATEWAY_PORT": str(port),
            "GATEWAY_ADMIN_PORT": str(self.admin_port),
        }
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway_svc"],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Until /healthz answers. Generous: a child process imports the whole gateway, and on
        a loaded machine (three test workers on two cores) that took more than 15 s."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("the gateway did not become healthy")

    def rss_bytes(self, pid: int | None = None) -> int:
        status = Path(f"/proc/{pid or self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def gateway_process(tmp_path: Path, bus_settings: dict[str, Any]) -> Any:
    """``proc = gateway_process(table, env)``: a gateway child process, stopped after the test."""
    processes: list[GatewayProcess] = []

    def start(table: dict[str, Any], env: dict[str, str] | None = None) -> GatewayProcess:
        path = tmp_path / f"routes-proc-{len(processes)}.yaml"
        path.write_text(yaml.safe_dump(table))
        base = {
            "SWITCHYARD_ENV": "test",
            "GATEWAY_ROUTES_FILE": str(path),
            "GATEWAY_ACCESS_LOG": "off",
            "JWKS_URL": dead_url() + "/.well-known/jwks.json",
            "LOG_LEVEL": "ERROR",
            "AMQP_URL": bus_settings["amqp_url"],
            "BUS_EXCHANGE": bus_settings["bus_exchange"],
            "BUS_QUEUE_PREFIX": bus_settings["bus_queue_prefix"],
            "BUS_QUEUE_EXPIRES_MS": str(bus_settings["bus_queue_expires_ms"]),
            "BUS_QUEUE_TYPE": "classic",
            "INTERNAL_API_TOKEN": TEST_INTERNAL_TOKEN,
        }
        log_path = tmp_path / f"gateway-proc-{len(processes)}.log"
        process = GatewayProcess({**base, **(env or {})}, free_port(), log_path)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


async def raw_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a plain socket: exactly these headers, nothing injected
    (the test process' aiohttp client is traced and would add its own traceparent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        decoded = b""
        while payload:
            size_line, _, rest = payload.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += rest[:size]
            payload = rest[size + 2 :]
        payload = decoded
    return int(status_line.split()[1]), parsed, payload

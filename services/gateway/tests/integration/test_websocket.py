"""WebSocket upgrades through the gateway: a plain echo, and Socket.IO (python-socketio
server on aiohttp) with both the polling and the websocket transports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from .conftest import GatewayFactory, Upstream, route_table


async def test_websocket_echo(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "echo:hello"
        payload = bytes(range(256)) * 1000
        await ws.send_bytes(payload)
        assert (await ws.receive_bytes()) == payload
    assert upstream.hits == []  # /ws is the upstream's websocket handler, not the recorder


async def test_websocket_refused_on_plain_routes(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect(gateway.url + "/public/ws")
    assert caught.value.status == 400


@pytest.fixture
async def socketio_upstream(start_app: Callable[[web.Application], Awaitable[Any]]) -> str:
    # A short ping interval keeps long-polls short (engine.io answers a waiting GET with
    # a ping), so the polling client's disconnect does not wait the default 25 s. The ping
    # timeout is generous: a loaded machine can hold a pong back for seconds.
    server = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins=[], ping_interval=1, ping_timeout=10
    )

    @server.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        return bool(auth and auth.get("token") == "let-me-in")

    @server.event
    async def echo(sid: str, data: Any) -> Any:
        return {"echo": data, "sid": sid}

    app = web.Application()
    server.attach(app)
    started = await start_app(app)
    return str(started.url)


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_socketio_client_through_the_gateway(
    transport: str, make_gateway: GatewayFactory, upstream: Upstream, socketio_upstream: str
) -> None:
    table = route_table(upstream.url, chat=[socketio_upstream])
    table["routes"].insert(
        0,
        {
            "name": "chat-socketio",
            "upstream": "chat",
            "prefix": "/socket.io/",
            "auth": "public",
            "websocket": True,
            "sticky": "client_ip",
            "timeout": 60,
        },
    )
    gateway = await make_gateway(table)
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        gateway.url, transports=[transport], auth={"token": "let-me-in"}, wait_timeout=20
    )
    try:
        assert client.transport() == transport
        for index in range(3):
            answer = await client.call("echo", {"n": index}, timeout=20)
            assert answer["echo"] == {"n": index}
    finally:
        await client.disconnect()

    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(
            gateway.url, transports=[transport], auth={"token": "wrong"}, wait_timeout=20
        )
    await refused.disconnect()

"""Hostile and broken peers: clients that do not read, garbage on the request line,
upstreams that stream slowly, never read, or send bytes past the end of a response."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway_svc.app import Gateway

from .conftest import GatewayFactory, Upstream, route_table


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One Content-Length-framed response from a keep-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def gateway_side(gateway: Gateway) -> Any:
    """The gateway's only client connection (the test just opened it)."""
    (conn,) = gateway.connections
    return conn


async def slow_reader(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a tiny receive buffer that sends a request and then does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """``url = await raw_upstream(handler)``: a TCP server speaking whatever the test writes."""
    servers: list[asyncio.Server] = []

    async def start(handler: Any) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def test_garbage_request_line_gets_a_problem_not_a_silent_close(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    for garbage in (b"GARBAGE\r\n\r\n", b"FOO /public/a HTTP/1.1\r\nHost: t\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(garbage)
        status, headers, body = await read_response(reader)
        assert status == 400
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert json.loads(body)["request_id"] == headers["x-request-id"]
        assert await reader.read() == b""  # and then the connection is closed
        writer.close()
    assert upstream.hits == []


async def test_a_client_that_does_not_read_is_not_blamed_on_the_upstream(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """The route timeout (0.5 s) passes while the gateway waits for the client to take
    the response: the client is dropped, the upstream's breaker counts nothing."""
    gateway = await make_gateway(route_table(upstream.url))
    host = gateway.groups["main"].hosts[0]
    stalled = [await slow_reader(gateway.port, "/slow/x?size=16000000") for _ in range(3)]
    await asyncio.sleep(1.5)
    assert host.breaker.consecutive == 0
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    # Same host, same breaker; a route with the default timeout (2 s), as the slow route's
    # 0.5 s could pass on a loaded machine before even a quick answer came.
    writer.write(b"GET /public/after HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, _ = await asyncio.wait_for(read_response(reader), 30)
    assert status == 200  # not 503: three stalled clients did not open the circuit
    writer.close()
    for _, stalled_writer in stalled:
        stalled_writer.close()


async def test_a_client_that_stops_reading_is_not_buffered_for_on_its_next_request(
    make_gateway: GatewayFactory,
    start_app: Callable[[web.Application], Awaitable[Any]],
) -> None:
    """A keep-alive client falls behind on its first response (the gateway stops
    writing to it) and asks for a big second one without reading: the second upstream
    is not read faster than the client takes it, so the gateway does not buffer it."""

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * int(request.query["size"]))

    app = web.Application()
    app.router.add_get("/{tail:.*}", blob)
    server = await start_app(app)
    gateway = await make_gateway(route_table(server.url))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    await asyncio.sleep(0.05)
    side = gateway_side(gateway)
    side.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer.write(b"GET /public/first?size=200000 HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.3)
    writer.write(b"GET /public/second?size=16000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.7)
    assert side.transport.get_write_buffer_size() < 2 * 1024 * 1024
    status, _, first = await asyncio.wait_for(read_response(reader), 30)
    assert status == 200 and len(first) == 200_000
    status, _, second = await asyncio.wait_for(read_response(reader), 30)
    assert status == 200 and len(second) == 16_000_000
    writer.close()


async def test_a_streaming_response_is_not_cut_while_bytes_flow(
    make_gateway: GatewayFactory,
    start_app: Callable[[web.Application], Awaitable[Any]],
) -> None:
    """The route timeout (1.5 s here) is an idle timeout: small pieces every 0.15 s for 2.4 s
    reach the client whole, and the breaker counts no failure. (The table's 0.5 s left a
    loaded machine 0.35 s of pause between two pieces before the stream was cut.)"""

    async def ticks(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for index in range(16):
            await response.write(b"tick %d\n" % index)
            await asyncio.sleep(0.15)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", ticks)
    server = await start_app(app)
    table = route_table(server.url)
    [slow] = [route for route in table["routes"] if route["name"] == "slow"]
    slow["timeout"] = 1.5
    gateway = await make_gateway(table)
    host = gateway.groups["main"].hosts[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /slow/stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    head, _, chunked = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert chunked.endswith(b"0\r\n\r\n")  # the terminating chunk: not truncated
    for index in range(16):
        assert b"tick %d\n" % index in chunked
    assert host.breaker.consecutive == 0


async def test_websocket_tunnel_applies_back_pressure_towards_the_upstream(
    make_gateway: GatewayFactory, raw_upstream: Callable[[Any], Awaitable[str]]
) -> None:
    """An upstream that accepts the upgrade and then reads nothing: the client is slowed
    down, the gateway does not buffer what it sends."""
    holds: list[asyncio.StreamWriter] = []

    async def accept_and_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        holds.append(writer)  # never reads again

    url = await raw_upstream(accept_and_ignore)
    gateway = await make_gateway(route_table(url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    side = gateway_side(gateway)
    block = b"z" * 65536
    sent = 0
    with pytest.raises(TimeoutError):
        while sent < 64 * 1024 * 1024:
            writer.write(block)
            sent += len(block)
            await asyncio.wait_for(writer.drain(), 1.0)
    assert side.tunnel is not None
    assert side.tunnel.get_write_buffer_size() < 1024 * 1024
    writer.transport.abort()


async def test_bytes_after_a_response_never_reach_the_next_request(
    make_gateway: GatewayFactory, raw_upstream: Callable[[Any], Awaitable[str]]
) -> None:
    """An upstream that writes past the end of its response (the start of a forged
    second response): the first client gets its answer and keeps its connection, the
    polluted upstream connection is dropped, the next request gets a clean answer."""
    connections = 0

    async def sloppy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if first:
                first = False
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=stolen\r\n"
                )
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean")

    url = await raw_upstream(sloppy)
    gateway = await make_gateway(route_table(url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /public/one HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, body = await asyncio.wait_for(read_response(reader), 30)
    assert (status, body) == (200, b"ok")
    await asyncio.sleep(0.1)
    writer.write(b"GET /public/two HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = await asyncio.wait_for(read_response(reader), 30)
    assert (status, body) == (200, b"clean")
    assert "set-cookie" not in headers
    assert connections == 2
    assert gateway.groups["main"].hosts[0].breaker.consecutive == 0
    writer.close()


async def test_host_must_be_present_once_and_identity_headers_in_any_spelling_are_dropped(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    for head in (
        b"GET /public/a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /public/a HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(head)
        status, headers, body = await read_response(reader)
        assert status == 400
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["type"].endswith("/bad-host")
        writer.close()
    assert upstream.hits == []
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(  # HTTP/1.0 may leave Host out; spoofed identity never passes
        b"GET /public/a HTTP/1.0\r\nX_User_Id: admin\r\nx-user_roles: admin\r\n\r\n"
    )
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200
    (hit,) = upstream.hits
    assert not [name for name in hit["headers"] if name.replace("_", "-").startswith("x-user-")]

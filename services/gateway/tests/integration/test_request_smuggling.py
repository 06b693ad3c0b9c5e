"""Issue 8, item by item: raw-socket reproductions of the request-smuggling, path and
connection-hold attacks, against a real gateway and a recording upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from gateway_svc.app import Gateway
from switchyard.testing import Stopwatch

from .conftest import GatewayFactory, route_table
from .recorder import Accounting, RecordingUpstream, check, quiet, read_available

WS_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingUpstream]:
    upstream = await RecordingUpstream().start()
    yield upstream
    await upstream.stop()


async def exchange_bytes(port: int, data: bytes, wait: float = 0.3) -> bytes:
    """Send raw bytes, collect what comes back until the gateway closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = await read_available(reader, wait)
    writer.transport.abort()
    return received


def statuses(data: bytes) -> list[int]:
    return [int(line.split()[1]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.")]


async def victim(port: int, rid: str) -> bytes:
    """A well-behaved client's request: its answer must be its own."""
    data = await exchange_bytes(
        port,
        f"GET /public/victim HTTP/1.1\r\nHost: x\r\nX-Request-ID: {rid}\r\n"
        "Connection: close\r\n\r\n".encode(),
        wait=2,
    )
    assert statuses(data) == [200], data
    assert f"rid={rid} ".encode() in data, data
    return data


async def setup(
    make_gateway: GatewayFactory, recorder: RecordingUpstream, **settings: object
) -> tuple[Gateway, Accounting]:
    gateway = await make_gateway(route_table(recorder.url), **settings)
    return gateway, Accounting(gateway)


# -- item 1: Upgrade + Content-Length -------------------------------------------------------


async def test_upgrade_with_content_length_on_a_plain_route_cannot_desync(
    make_gateway: GatewayFactory, recorder: RecordingUpstream
) -> None:
    gateway, accounting = await setup(make_gateway, recorder)
    smuggled = (
        b"GET /admin/users HTTP/1.1\r\nHost: x\r\nX-User-Id: attacker\r\n"
        b"X-User-Roles: admin\r\nX-Request-ID: smuggled\r\n\r\n"
    )
    trace = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    # The gateway's own head for the second request, as the issue computes N.
    second_head = (
        "GET /public/jwks HTTP/1.1\r\nHost: x\r\nX-Request-ID: second\r\n"
        f"traceparent: {trace}\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        f"X-Forwarded-Host: x\r\nContent-Length: {len(smuggled)}\r\n\r\n"
    ).encode()
    attack = (
        b"GET /public/jwks HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"X-Request-ID: first\r\nContent-Length: %d\r\n\r\n"
        % len(second_head)
        + f"GET /public/jwks HTTP/1.1\r\nHost: x\r\nX-Request-ID: second\r\n"
        f"traceparent: {trace}\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled
    )
    answer = await exchange_bytes(gateway.port, attack)
    await victim(gateway.port, "victim-1")
    await quiet(gateway, recorder)
    assert b"X-User-Roles" not in b"".join(bytes(raw) for raw in recorder.raw.values())
    assert all(seen.request_id != b"smuggled" for seen in recorder.seen)
    assert b"victim-1" not in answer
    check(accounting.done, recorder.seen, "upgrade+content-length")


# -- item 2: bytes after an upgrade head, refused upgrades ------------------------------------


async def test_bytes_after_an_upgrade_head_wait_for_101_and_a_refused_upgrade_is_not_pooled(
    make_gateway: GatewayFactory, recorder: RecordingUpstream
) -> None:
    gateway, accounting = await setup(make_gateway, recorder)
    attack = (
        f"GET /ws/chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"{WS_KEY}X-Request-ID: upgrade\r\n\r\n"
        "GET /public/after HTTP/1.1\r\nHost: x\r\nX-User-Id: attacker\r\n"
        "X-Request-ID: smuggled\r\n\r\n"
    ).encode()
    answer = await exchange_bytes(gateway.port, attack)
    assert statuses(answer) == [400]  # the upstream's refusal, and then the connection closes
    await victim(gateway.port, "victim-2")
    await quiet(gateway, recorder)
    assert [seen.request_id for seen in recorder.seen] == [b"upgrade", b"victim-2"]
    upgrade, after = recorder.seen
    assert upgrade.connection != after.connection  # never reused after a refused upgrade
    assert b"attacker" not in bytes(recorder.raw[upgrade.connection])
    check(accounting.done, recorder.seen, "refused upgrade")


async def test_a_websocket_upgrade_with_a_body_is_refused(
    make_gateway: GatewayFactory, recorder: RecordingUpstream
) -> None:
    gateway, _ = await setup(make_gateway, recorder)
    answer = await exchange_bytes(
        gateway.port,
        f"GET /ws/chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"{WS_KEY}Content-Length: 5\r\n\r\nhello".encode(),
    )
    assert statuses(answer) == [400]
    assert recorder.seen == []


# -- item 3: one canonical path -------------------------------------------------------------------


async def test_routing_and_forwarding_use_the_canonical_path(
    make_gateway: GatewayFactory, recorder: RecordingUpstream
) -> None:
    gateway, accounting = await setup(make_gateway, recorder)
    # the login route allows 2 per minute: encodings and fragments must not escape it
    codes = []
    for target in ("/api/v1/auth/logi%6e", "/api/v1/auth/login#x", "/api/v1/auth/%6Cogin"):
        answer = await exchange_bytes(
            gateway.port,
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode(),
        )
        codes += statuses(answer)
    assert codes == [200, 200, 429]
    assert [seen.target for seen in recorder.seen] == [b"/api/v1/auth/login"] * 2
    for target, forwarded in (
        ("/public/%41b%7e?q=%41#frag", b"/public/Ab~?q=%41"),
        ("/public/a%2Etxt", b"/public/a.txt"),
        ("/public/sp%20ace%c3%a9", b"/public/sp%20ace%C3%A9"),
    ):
        answer = await exchange_bytes(
            gateway.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        assert statuses(answer) == [200], target
        assert recorder.seen[-1].target == forwarded
    before = len(recorder.seen)
    for target in (
        "/public/a%2fb",
        "/public/%2e%2e/admin",
        "/public/%2E/x",
        "/public/a%5cb",
        "/public/a%00",
        "/public/a%zz",
        "/public/a%4",
    ):
        answer = await exchange_bytes(
            gateway.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        assert statuses(answer) == [400], target
    assert len(recorder.seen) == before
    await quiet(gateway, recorder)
    check(accounting.done, recorder.seen, "canonical path")


# -- item 4: connections are never held -------------------------------------------------------


@pytest.mark.parametrize("path", ["/no-such-route", "/api/v1/chat/x"])
async def test_an_early_local_answer_does_not_hold_the_connection(
    make_gateway: GatewayFactory, recorder: RecordingUpstream, path: str
) -> None:
    gateway, _ = await setup(make_gateway, recorder, header_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 65000\r\n\r\n".encode())
    clock = Stopwatch()
    data = await asyncio.wait_for(reader.read(), 30)  # the answer, then the close
    assert statuses(data) in ([404], [401])
    # Closed at once, not after the header timeout's wait for the body; the bound is on
    # the time the CPUs were free (the machine is shared with other test workers).
    assert clock.within(4), clock.report()
    writer.close()
    assert recorder.seen == []


async def test_a_trickled_body_hits_the_overall_body_deadline(
    make_gateway: GatewayFactory, recorder: RecordingUpstream
) -> None:
    gateway, _ = await setup(make_gateway, recorder, body_timeout=1.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"POST /upload/slowly HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    clock = Stopwatch()

    async def trickle() -> None:
        for _ in range(100):
            await asyncio.sleep(0.3)
            writer.write(b"x")

    task = asyncio.create_task(trickle())
    data = await asyncio.wait_for(reader.read(), 30)
    task.cancel()
    assert statuses(data) == [408]
    # The 1.5 s body deadline, not the upload route's 30 s timeout; the bound is on the time
    # the CPUs were free (the machine is shared with other test workers).
    assert clock.within(3.5), clock.report()
    writer.close()


# -- item 5: methods, versions, forms, codings, limits ------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"CONNECT /public/a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"TRACE /public/a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"PROPFIND /public/a HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET /public/a\r\n\r\n", 505),
        (b"GET /public/a HTTP/0.9\r\nHost: x\r\n\r\n", 505),
        (b"GET /public/a HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET http://x/public/a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            b"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"0\r\n\r\n",
            501,
        ),
        (
            b"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            b"POST /public/a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nhello\r\n0\r\n\r\n",
            400,
        ),
    ],
)
async def test_refused_before_anything_is_forwarded(
    make_gateway: GatewayFactory, recorder: RecordingUpstream, request_bytes: bytes, status: int
) -> None:
    gateway, _ = await setup(make_gateway, recorder)
    # a pooled upstream connection is ready: nothing may be written to it
    warm = await exchange_bytes(gateway.port, b"GET /public/warm HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(warm) == [200]
    answer = await exchange_bytes(gateway.port, request_bytes + b"GET /public/next HTTP/1.1\r\n")
    assert statuses(answer) == [status], answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["status"] == status
    if status == 405:
        assert b"Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" in head
    await quiet(gateway, recorder)
    assert [seen.target for seen in recorder.seen] == [b"/public/warm"]
    assert sum(len(raw) for raw in recorder.raw.values()) == len(recorder.raw[1])


async def test_the_header_count_is_limited_below_what_upstreams_accept(
    make_gateway: GatewayFactory, recorder: RecordingUpstream
) -> None:
    gateway, _ = await setup(make_gateway, recorder)
    assert gateway.settings.max_headers <= 100

    def head(count: int) -> bytes:
        extra = "".join(f"X-Filler-{index}: {index}\r\n" for index in range(count - 1))
        return f"GET /public/a HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()

    assert statuses(await exchange_bytes(gateway.port, head(100))) == [200]
    assert statuses(await exchange_bytes(gateway.port, head(101))) == [431]
    assert len(recorder.seen) == 1

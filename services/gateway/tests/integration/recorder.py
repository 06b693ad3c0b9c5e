"""A recording upstream and the differential oracle of the request-handling tests.

:class:`RecordingUpstream` is a real TCP server speaking HTTP/1.1 keep-alive. It keeps
the raw bytes each connection received and splits them into requests with llhttp (the
parser family aiohttp upstreams use), exactly as a naive upstream would: a request that
asks for an ``Upgrade`` is refused with a keep-alive ``400`` and the bytes after its head
are parsed as the next request (the chat stand-in of issue 8). Two targets make it a
broken upstream: ``answer-101`` gets a ``101`` it never asked for, after which the
connection goes on as HTTP/1.1; ``answer-twice`` gets a second, stray response in the
same write, and every later answer on that connection comes 0.1 s late (an upstream off
by one: whoever takes the connection next would read the answer meant for the request
before); ``answer-outcome`` answers as auth does a failed credential check
(``X-Auth-Outcome: failure; account=corpus``), which the gateway must read and never relay.
Every response carries the request id and the upstream's own sequence number, so a response
handed to the wrong client is visible, and a ``Server`` header naming its software, which the
gateway must drop (``shout`` in the target spells it ``SERVER``).

:class:`Accounting` records what the gateway itself says it did with each request (the
exchange as its access-log line is written): :func:`check` then compares the two sides.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httptools

from gateway_svc.app import Gateway
from gateway_svc.proxy.edges import canonical_target


@dataclass
class Seen:
    """One request as the upstream parsed it."""

    connection: int
    method: str = ""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body_bytes: int = 0
    complete: bool = False
    upgrade: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def request_id(self) -> bytes | None:
        return self.header(b"x-request-id")


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, owner: RecordingUpstream) -> None:
        self.owner = owner
        self.id = next(owner.ids)
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.cur: Seen | None = None
        self.broken = False
        self.late_until = 0.0  # after a stray response: answers go out late, in order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner.raw[self.id] = bytearray()
        self.owner.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.open -= 1

    def data_received(self, data: bytes) -> None:
        self.owner.raw.setdefault(self.id, bytearray()).extend(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Refused with a keep-alive 400 already; the rest is parsed as HTTP/1.1.
            self.parser = httptools.HttpRequestParser(self)
            rest = data[upgrade.args[0] :]
            if rest:
                self._feed(rest)
        except httptools.HttpParserError:
            self.broken = True
            self.owner.errors += 1
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.cur = Seen(self.id)
        self.owner.seen.append(self.cur)

    def on_url(self, url: bytes) -> None:
        assert self.cur is not None
        self.cur.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None
        self.cur.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.cur is not None
        self.cur.method = self.parser.get_method().decode()
        self.cur.upgrade = self.parser.should_upgrade()

    def on_body(self, body: bytes) -> None:
        assert self.cur is not None
        self.cur.body_bytes += len(body)

    def on_message_complete(self) -> None:
        seen = self.cur
        assert seen is not None and self.transport is not None
        seen.complete = True
        self.owner.served += 1
        rid = (seen.request_id or b"-").decode("latin-1")
        status = b"400 Bad Request" if seen.upgrade else b"200 OK"
        body = f"rid={rid} seq={self.owner.served} conn={self.id}".encode()
        if b"answer-101" in seen.target and not seen.upgrade:
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n"
            )
            return
        # Spelled as aiohttp spells it, and shouting: neither may reach a client.
        server = b"SERVER" if b"shout" in seen.target else b"Server"
        outcome = (
            b"X-Auth-Outcome: failure; account=corpus\r\n"
            if b"answer-outcome" in seen.target
            else b""
        )
        head = (
            b"HTTP/1.1 %s\r\n%s: Python/3.11 aiohttp/3.9.5\r\nContent-Type: text/plain\r\n"
            b"%sContent-Length: %d\r\n\r\n" % (status, server, outcome, len(body))
        )
        answer = head if seen.method == "HEAD" else head + body
        if b"answer-twice" in seen.target:
            answer += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
            self.transport.write(answer)
            self.late_until = -1.0
        elif self.late_until:
            loop = asyncio.get_running_loop()
            self.late_until = max(loop.time() + 0.1, self.late_until + 0.001)
            loop.call_at(self.late_until, self.transport.write, answer)
        else:
            self.transport.write(answer)


class RecordingUpstream:
    """``url`` after :meth:`start`; ``seen`` lists every request in arrival order."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.raw: dict[int, bytearray] = {}
        self.seen: list[Seen] = []
        self.served = 0
        self.errors = 0
        self.open = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> RecordingUpstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _UpstreamSide(self), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def reset(self) -> None:
        self.seen.clear()
        self.raw.clear()


@dataclass
class Accounted:
    """One request as the gateway accounted for it."""

    request_id: bytes
    method: str
    url: bytes
    path: bytes
    forwarded: bool
    body_bytes: int
    body_done: bool
    identity: bytes
    status: int


class Accounting:
    """Hooks the gateway's access-log write (called once per finished exchange)."""

    def __init__(self, gateway: Gateway) -> None:
        self.done: list[Accounted] = []
        log = gateway.access_log
        original = log.write

        def write(ex: Any, status: int, seconds: float) -> None:
            self.done.append(
                Accounted(
                    request_id=ex.request_id,
                    method=ex.method.decode("latin-1"),
                    url=ex.url,
                    path=ex.path,
                    forwarded=ex.head_sent,
                    body_bytes=ex.body_bytes,
                    body_done=ex.body_done,
                    identity=ex.caller.headers if ex.caller is not None else b"",
                    status=status,
                )
            )
            original(ex, status, seconds)

        log.write = write  # type: ignore[method-assign]

    def reset(self) -> None:
        self.done.clear()


async def quiet(gateway: Gateway, upstream: RecordingUpstream, timeout: float = 10.0) -> None:
    """Wait until no client request is in progress and the upstream got all it was sent
    (``timeout`` is generous: on a loaded machine an exchange can take seconds, and the checks
    after this call would then see it half done; a quiet gateway returns at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        busy = any(
            conn.active is not None or conn.parsing is not None for conn in gateway.connections
        )
        if not busy and not gateway.in_flight:
            break
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.002)


# How long the first bytes of an answer may take. Generous: on a loaded machine (CI runs three
# test workers on two cores) the gateway, the upstream and this client, all on one event loop,
# can be kept off the CPU for a second; a short quiet window would read that as no answer.
FIRST_BYTES = 10.0


async def read_available(
    reader: asyncio.StreamReader, wait: float, *, first: float = FIRST_BYTES
) -> bytes:
    """What a client receives until the gateway closes or stays quiet for ``wait`` s after
    its last bytes (the first ones may take ``first`` s, at least ``wait``)."""
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait if data else max(wait, first))
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    return data


def check(
    accounted: list[Accounted],
    seen: list[Seen],
    label: str,
    hop_by_hop: frozenset[bytes] = frozenset(),
) -> None:
    """The oracle: the upstream saw exactly the requests the gateway forwarded — same
    count, method, canonical target and body length — no identity header the gateway
    did not set, one Authorization header at most (the one the gateway verified), no
    ``X-Auth-Outcome`` (auth's word to the gateway, never a client's), and none of
    ``hop_by_hop`` (names the client listed in ``Connection``)."""
    forwarded = [entry for entry in accounted if entry.forwarded]
    ours = Counter((e.request_id, e.method, e.url) for e in forwarded)
    theirs = Counter(((s.request_id or b""), s.method, s.target) for s in seen)
    assert ours == theirs, f"{label}: gateway forwarded {ours}, upstream saw {theirs}"
    by_id = {entry.request_id: entry for entry in forwarded}
    for request in seen:
        entry = by_id[request.request_id or b""]
        # routed on the path it forwarded, and that path is the canonical one
        assert entry.path == entry.url.partition(b"?")[0], label
        assert canonical_target(request.target) == request.target, f"{label}: not canonical"
        if request.complete and entry.body_done:
            assert request.body_bytes == entry.body_bytes, (
                f"{label}: {request.method} {request.target!r} carried {request.body_bytes} "
                f"body bytes upstream, the gateway read {entry.body_bytes}"
            )
        identity = [
            (name.lower(), value)
            for name, value in request.headers
            if name.lower().replace(b"_", b"-").startswith(b"x-user-")
        ]
        expected = [
            (line.partition(b":")[0].lower(), line.partition(b":")[2].strip())
            for line in entry.identity.split(b"\r\n")
            if line
        ]
        assert sorted(identity) == sorted(expected), f"{label}: identity headers {identity}"
        tokens = [name for name, _ in request.headers if name.lower() == b"authorization"]
        assert len(tokens) <= 1, f"{label}: {len(tokens)} Authorization headers forwarded"
        outcome = [name for name, _ in request.headers if name.lower() == b"x-auth-outcome"]
        assert not outcome, f"{label}: a client's X-Auth-Outcome reached the upstream"
        leaked = [name for name, _ in request.headers if name.lower() in hop_by_hop]
        assert not leaked, f"{label}: hop-by-hop headers {leaked} reached the upstream"

"""Chat benchmarks: messages through the real gateway into the chat service and out to the
recipient's socket, beside a bare python-socketio relay under the same load.

``uv run python -m benchmarks chat``

Both servers run as their own processes (the chat service with the machine's RabbitMQ and
the embedded store, behind the gateway with quotas no benchmark reaches; the relay alone,
no persistence, no auth, no gateway). The load generator is this process: stock
python-socketio clients over WebSocket, two users per direct conversation.

- open loop: ``RATE`` messages/s offered for ``SECONDS`` s, each from one member of a
  random conversation; latency = send → the other member's socket receives ``message``
  (the chat client acks it: that is the delivered receipt); lost = sent, acknowledged and
  never received after a drain; at 1,000 sockets / 500 conversations and at 100 sockets;
- saturation: ``LANES`` senders each awaiting its ack before the next, for ``SAT_SECONDS`` s:
  messages/s received;
- the chat process's CPU (user + system seconds per second of the open loop) and RSS.

Targets (issue 13): p99 < 100 ms, 0 lost, chat throughput ≥ 0.5 × the relay's. Set
``CHAT_BENCH_SECONDS`` / ``CHAT_BENCH_SOCKETS`` to change the run; bounded at ~6 min.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.processes import ServiceProcess, gateway_process, run_namespace, service_process
from benchmarks.rows import row

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
RATE = 500.0
SECONDS = float(os.environ.get("CHAT_BENCH_SECONDS", "30"))
SOCKETS = int(os.environ.get("CHAT_BENCH_SOCKETS", "1000"))
SMALL_SOCKETS = 100
SMALL_SECONDS = 10.0
SAT_SECONDS = 10.0
# A rate the embedded store sustains (the latency without queueing), beside the target's.
GENTLE_RATE = 40.0
GENTLE_SECONDS = 10.0
# Sends waiting for their ack beyond this many seconds of offered load: the server is not
# keeping up, and offering more only grows its queue (the run stops offering and says so).
BACKLOG_SECONDS = 5.0
LANES = 50
DRAIN_SECONDS = 5.0
CONNECT_CONCURRENCY = 25
TARGET_P99_MS = 100.0
HARD_LIMIT_SECONDS = 600.0

_row = functools.partial(row, "chat")


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


@dataclass
class Load:
    """Clients, what they sent (key → send time) and what arrived."""

    clients: list[Any] = field(default_factory=list)
    sent: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    refused: int = 0

    def on_message(self, data: Any) -> None:
        message = data.get("message", {}) if isinstance(data, dict) else {}
        started = self.sent.pop(str(message.get("body")), None)
        if started is not None:
            self.latencies.append(time.perf_counter() - started)
            self.received += 1

    async def connect(self, url: str, auths: list[dict[str, str]]) -> None:
        import socketio

        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(auth: dict[str, str]) -> Any:
            client = socketio.AsyncClient(reconnection=False)

            async def message(data: Any) -> dict[str, Any]:
                self.on_message(data)
                return {}

            client.on("message", message)
            async with gate:
                await client.connect(url, auth=auth, transports=["websocket"], wait_timeout=30)
            return client

        self.clients = list(await asyncio.gather(*(one(a) for a in auths)))

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients), return_exceptions=True)

    def reset(self) -> None:
        self.sent.clear()
        self.latencies.clear()
        self.received = 0
        self.refused = 0


Payload = Callable[[int, str], tuple[int, dict[str, Any]]]


async def open_loop(load: Load, payload: Payload, rate: float, seconds: float) -> dict[str, Any]:
    """Offer ``rate`` messages/s for ``seconds``; then drain. Latency and loss."""
    load.reset()
    pending: set[asyncio.Task[None]] = set()
    refused_keys: set[str] = set()

    async def send(n: int) -> None:
        key = f"k{n}-{uuid.uuid4().hex[:6]}"
        index, data = payload(n, key)
        load.sent[key] = time.perf_counter()
        try:
            ack = await load.clients[index].call("send_message", data, timeout=30)
        except Exception:  # noqa: BLE001 — a timed-out or failed send counts as refused
            ack = None
        if not isinstance(ack, dict) or "error" in ack:
            load.refused += 1
            refused_keys.add(key)
            load.sent.pop(key, None)

    started = time.perf_counter()
    n = 0
    stopped_at: float | None = None
    while (elapsed := time.perf_counter() - started) < seconds:
        if len(pending) > rate * BACKLOG_SECONDS:
            stopped_at = elapsed
            break
        due = int(elapsed * rate)
        while n < due:
            task = asyncio.create_task(send(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.sleep(0.005)
    offering = time.perf_counter() - started
    await asyncio.gather(*pending)
    drain_until = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < drain_until:
        if not load.sent:
            break
        await asyncio.sleep(0.05)
    return {
        "offered": n,
        "received": load.received,
        "lost": len(load.sent),
        "refused": load.refused,
        "p50": _percentile(load.latencies, 0.5),
        "p99": _percentile(load.latencies, 0.99),
        "rate": load.received / (time.perf_counter() - started),
        "offered_for": offering,
        "stopped_at": stopped_at,
    }


async def saturation(load: Load, payload: Payload, seconds: float) -> float:
    """Messages/s received with ``LANES`` closed-loop senders."""
    load.reset()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def lane() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            key = f"s{n}-{uuid.uuid4().hex[:6]}"
            index, data = payload(n, key)
            load.sent[key] = time.perf_counter()
            try:
                await load.clients[index].call("send_message", data, timeout=30)
            except Exception:  # noqa: BLE001 — a failed send is simply not received
                load.sent.pop(key, None)

    await asyncio.gather(*(lane() for _ in range(LANES)))
    await asyncio.sleep(1.0)
    return load.received / seconds


async def _relay_runs(scratch: Path) -> dict[str, Any]:
    from switchyard.testing.servers import free_port

    port = free_port()
    relay = ServiceProcess(["-m", "benchmarks.chat_relay", str(port)], {}, scratch / "relay.log")
    url = f"http://127.0.0.1:{port}"
    results: dict[Any, Any] = {}
    try:
        await relay.ready(url + "/healthz")
        for sockets, seconds in ((SMALL_SOCKETS, SMALL_SECONDS), (SOCKETS, SECONDS)):
            load = Load()
            users = [f"u{n}" for n in range(sockets)]
            await load.connect(url, [{"user": u} for u in users])

            def payload(n: int, key: str, users: list[str] = users) -> tuple[int, dict[str, Any]]:
                pair = random.randrange(len(users) // 2)
                side = random.randrange(2)
                return 2 * pair + side, {"to": users[2 * pair + 1 - side], "body": key}

            cpu, wall = relay.cpu_seconds(), time.perf_counter()
            results[sockets] = await open_loop(load, payload, RATE, seconds)
            results[sockets]["cpu"] = (relay.cpu_seconds() - cpu) / (time.perf_counter() - wall)
            results[sockets]["rss"] = relay.rss_mb()
            if sockets == SOCKETS:
                results["gentle"] = await open_loop(load, payload, GENTLE_RATE, GENTLE_SECONDS)
                results["saturation"] = await saturation(load, payload, SAT_SECONDS)
            await load.close()
    finally:
        relay.stop()
    return results


async def _chat_runs(amqp_url: str, scratch: Path) -> dict[str, Any]:
    import aio_pika
    import aiohttp
    from pymongo import AsyncMongoClient

    from switchyard.directory import UserDirectory
    from switchyard.envelope import utcnow
    from switchyard.mongo.embedded import EmbeddedMongo
    from switchyard.testing import JwksServer
    from switchyard.testing.servers import delete_exchange, free_port

    name = "bench" + uuid.uuid4().hex[:10]
    exchange = f"switchyard.events.{name}"
    socketio_exchange = f"switchyard.socketio.{name}"
    mongo = EmbeddedMongo(scratch / "mongo")
    await asyncio.to_thread(mongo.start)
    jwks = await JwksServer().start()
    broker = await aio_pika.connect(amqp_url)
    channel = await broker.channel()
    topic = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    sink = await channel.declare_queue(
        f"{name}.sink", auto_delete=True, arguments={"x-max-length": 1}
    )
    await sink.bind(topic, "chat.#")  # notification's queue, in the suite
    chat_port, gateway_port = free_port(), free_port()
    common = {
        "SWITCHYARD_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "JWKS_URL": jwks.jwks_url,
        "AUTH_ISSUER": jwks.issuer,
        "JWT_AUDIENCE": jwks.audience,
    }
    namespace = run_namespace(amqp_url, mongo.url, name, exchange)
    chat = service_process(
        "chat",
        chat_port,
        common,
        namespace,
        scratch,
        SOCKETIO_EXCHANGE=socketio_exchange,
        # the saturation lanes send faster than a person: the flood limit is lifted
        CHAT_SOCKET_EVENT_RATE="100000",
        CHAT_SOCKET_EVENT_BURST="100000",
    )
    gateway = gateway_process("chat", chat_port, gateway_port, common, namespace, scratch)
    url = f"http://127.0.0.1:{gateway_port}"
    results: dict[Any, Any] = {}
    try:
        await chat.ready(f"http://127.0.0.1:{chat_port}/readyz")
        await gateway.ready(url + "/readyz")
        users = [f"bench-{n}" for n in range(SOCKETS)]
        store: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url, tz_aware=True)
        directory = UserDirectory(store[name]["chat_users"])  # what auth's events would write
        for uid in users:
            await directory.record_profile(
                uid,
                email=f"{uid}@example.com",
                display_name=uid,
                roles=["customer"],
                as_of=utcnow(),
            )
        await store.close()
        conversations: list[str] = []
        async with aiohttp.ClientSession() as http:
            gate = asyncio.Semaphore(20)

            async def create(pair: int) -> str:
                a, b = users[2 * pair], users[2 * pair + 1]
                async with (
                    gate,
                    http.post(
                        url + "/api/v1/chat/conversations",
                        json={"kind": "direct", "member_ids": [b]},
                        headers={"Authorization": f"Bearer {jwks.token(a, ['customer'])}"},
                    ) as response,
                ):
                    body = await response.json()
                    assert response.status == 201, body
                    return str(body["id"])

            conversations = list(await asyncio.gather(*(create(p) for p in range(SOCKETS // 2))))
        for sockets, seconds in ((SMALL_SOCKETS, SMALL_SECONDS), (SOCKETS, SECONDS)):
            load = Load()
            await load.connect(
                url, [{"token": jwks.token(u, ["customer"])} for u in users[:sockets]]
            )

            def payload(n: int, key: str, pairs: int = sockets // 2) -> tuple[int, dict[str, Any]]:
                pair = random.randrange(pairs)
                side = random.randrange(2)
                return 2 * pair + side, {
                    "conversation_id": conversations[pair],
                    "body": key,
                    "client_msg_id": key,
                }

            cpu, wall = chat.cpu_seconds(), time.perf_counter()
            results[sockets] = await open_loop(load, payload, RATE, seconds)
            results[sockets]["cpu"] = (chat.cpu_seconds() - cpu) / (time.perf_counter() - wall)
            results[sockets]["rss"] = chat.rss_mb()
            if sockets == SOCKETS:
                results["gentle"] = await open_loop(load, payload, GENTLE_RATE, GENTLE_SECONDS)
                results["saturation"] = await saturation(load, payload, SAT_SECONDS)
                results["store"] = await _store_ops_per_second(mongo.url, name)
            await load.close()
    finally:
        gateway.stop()
        chat.stop()
        await jwks.stop()
        await broker.close()
        await delete_exchange(amqp_url, exchange)
        await delete_exchange(amqp_url, socketio_exchange)
        await asyncio.to_thread(mongo.stop)
    return results


async def _store_ops_per_second(mongo_url: str, name: str) -> float:
    """The embedded store's floor: concurrent single-document ``$inc`` updates per second
    (one of the ~5 store operations a message costs), measured right after the chat runs."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    collection = client[name + "_floor"]["raw"]
    try:
        await collection.insert_many([{"_id": n, "n": 0} for n in range(16)])
        done = 0
        deadline = time.perf_counter() + 5.0

        async def lane(n: int) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await collection.update_one({"_id": n}, {"$inc": {"n": 1}})
                done += 1

        await asyncio.gather(*(lane(n) for n in range(16)))
        return done / 5.0
    finally:
        await client.drop_database(name + "_floor")
        await client.close()


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


async def _measure(amqp_url: str, scratch: Path) -> list[dict[str, Any]]:
    relay = await _relay_runs(scratch)
    chat = await _chat_runs(amqp_url, scratch)
    big, small = chat[SOCKETS], chat[SMALL_SOCKETS]
    rbig, rsmall = relay[SOCKETS], relay[SMALL_SOCKETS]
    where = f"{SOCKETS} sockets, {SOCKETS // 2} conversations, {RATE:.0f} msg/s for {SECONDS:.0f} s"
    p99 = _ms(big["p99"])
    return [
        _row(
            "send → receive p50",
            _ms(big["p50"]),
            _ms(rbig["p50"]),
            "ms",
            where + "; baseline: bare relay",
        ),
        _row(
            "send → receive p99",
            p99,
            _ms(rbig["p99"]),
            "ms",
            f"target < {TARGET_P99_MS:.0f} ms: {'met' if p99 is not None and p99 < TARGET_P99_MS else 'NOT met'}",
        ),
        _row(
            f"send → receive p99 at {SMALL_SOCKETS} sockets",
            _ms(small["p99"]),
            _ms(rsmall["p99"]),
            "ms",
            f"growth {SMALL_SOCKETS} → {SOCKETS} sockets: chat {_growth(small['p99'], big['p99'])}, relay {_growth(rsmall['p99'], rbig['p99'])}",
        ),
        _row(
            "messages received/s (open loop)",
            big["rate"],
            rbig["rate"],
            "msg/s",
            f"offered {big['offered']} / relay {rbig['offered']}"
            + (
                f"; chat stopped offering after {big['stopped_at']:.0f} s"
                f" ({BACKLOG_SECONDS:.0f} s of sends unacknowledged)"
                if big["stopped_at"] is not None
                else ""
            ),
        ),
        _row(
            f"p50 at {GENTLE_RATE:.0f} msg/s",
            _ms(chat["gentle"]["p50"]),
            _ms(relay["gentle"]["p50"]),
            "ms",
            f"p99 chat {_fmt_ms(chat['gentle']['p99'])}, relay {_fmt_ms(relay['gentle']['p99'])};"
            f" {SOCKETS} sockets; lost chat {chat['gentle']['lost']}, relay {relay['gentle']['lost']}",
        ),
        _row(
            "messages lost",
            big["lost"] + small["lost"],
            rbig["lost"] + rsmall["lost"],
            "msg",
            f"acked-then-never-received; refused/timed out: chat {big['refused'] + small['refused']}, relay {rbig['refused'] + rsmall['refused']}",
        ),
        _row(
            "saturation throughput",
            chat["saturation"],
            relay["saturation"],
            "msg/s",
            f"{LANES} closed-loop senders; target ≥ 0.5× the relay: "
            + ("met" if chat["saturation"] >= 0.5 * relay["saturation"] else "NOT met"),
        ),
        _row(
            "server CPU during the open loop",
            big["cpu"],
            rbig["cpu"],
            "cores",
            "chat process vs relay process (gateway, store, broker not counted)",
        ),
        _row("server RSS", big["rss"], rbig["rss"], "MiB", f"at {SOCKETS} sockets"),
        _row(
            "embedded store: single-document updates/s",
            chat["store"],
            None,
            "ops/s",
            "16 concurrent $inc; a message costs ~5 store operations (find by client id, $inc seq, insert, outbox clear, delivered mark)",
        ),
    ]


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms"


def _growth(small: float | None, big: float | None) -> str:
    if not small or big is None:
        return "—"
    return f"{big / small:.1f}×"


async def run() -> list[dict[str, Any]]:
    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    with tempfile.TemporaryDirectory() as scratch:
        return await asyncio.wait_for(_measure(amqp_url, Path(scratch)), HARD_LIMIT_SECONDS)

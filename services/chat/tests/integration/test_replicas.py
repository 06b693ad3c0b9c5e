"""Two chat processes behind the real gateway, users on different replicas: messages,
receipts and presence cross replicas through the fan-out exchange; a replica killed with
SIGKILL takes its users offline within 30 s, and they reconnect to the other and sync
without loss."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserRegistered
from switchyard.testing import EventTap, JwksServer, delete_exchange, eventually, service_bus
from switchyard.testing.servers import free_port
from switchyard.testing.sockets import SocketClient

from ..conftest import _gateway
from ..support import new_user_id

pytestmark = pytest.mark.integration
PREFIX = "/api/v1/chat"


def ip_for_replica(index: int, replicas: int = 2) -> str:
    """A client address the gateway's sticky hash sends to upstream ``index``."""
    for n in range(1, 250):
        ip = f"10.0.{index}.{n}"
        if zlib.crc32(ip.encode()) % replicas == index:
            return ip
    raise AssertionError("no address found")


class Replica:
    def __init__(self, env: dict[str, str], logs: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = logs / f"{name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chat_svc"],
                env={**env, "CHAT_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self, http: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited:\n{self.log.read_text()[-3000:]}")
            try:
                async with http.get(self.url + "/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, timeout=60, interval=0.2)

    async def sockets(self, http: aiohttp.ClientSession) -> float:
        async with http.get(self.url + "/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("chat_sockets_connected{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
async def cluster(
    settings_overrides: dict[str, Any],
    jwks_server: JwksServer,
    unique_name: str,
    tmp_path: Path,
    broker_cleanup: None,
) -> AsyncIterator[dict[str, Any]]:
    env = {
        **os.environ,
        "SWITCHYARD_ENV": "test",
        "AMQP_URL": settings_overrides["amqp_url"],
        "MONGO_URL": settings_overrides["mongo_url"],
        "MONGO_DATABASE": unique_name,
        "BUS_EXCHANGE": settings_overrides["bus_exchange"],
        "BUS_QUEUE_PREFIX": settings_overrides["bus_queue_prefix"],
        "BUS_QUEUE_EXPIRES_MS": "60000",
        "BUS_QUEUE_TYPE": "classic",
        "BUS_RETRY_DELAYS": "0.3,0.6",
        "OUTBOX_POLL_INTERVAL": "0.1",
        "JWKS_URL": jwks_server.jwks_url,
        "AUTH_ISSUER": jwks_server.issuer,
        "JWT_AUDIENCE": jwks_server.audience,
        # reads the revoked sessions from the JwksServer standing in for auth (not ready before)
        "INTERNAL_API_TOKEN": jwks_server.internal_token,
        "SOCKETIO_EXCHANGE": f"switchyard.socketio.{unique_name}",
        "CHAT_PRESENCE_HEARTBEAT": "2",
        "CHAT_PRESENCE_TTL": "8",
        "LOG_FORMAT": "console",
        "SHUTDOWN_TIMEOUT": "2",
    }
    replicas = [Replica(env, tmp_path, f"chat-{n}") for n in range(2)]
    http = aiohttp.ClientSession()
    gateways: list[Any] = []
    publisher = service_bus(settings_overrides, "auth")
    tap = EventTap(settings_overrides["amqp_url"], settings_overrides["bus_exchange"], "chat.#")
    try:
        for replica in replicas:
            await replica.ready(http)
        await publisher.connect()
        await tap.start()
        gateway = await _gateway([r.url for r in replicas], jwks_server, gateways)
        yield {
            "replicas": replicas,
            "gateway": gateway,
            "http": http,
            "publisher": publisher,
            "keys": jwks_server,
            "tap": tap,
        }
    finally:
        for replica in replicas:
            replica.stop()
        for started in gateways:
            await started.stop(grace=0.5)
        await tap.close()
        await publisher.close()
        await http.close()
        await delete_exchange(settings_overrides["amqp_url"], f"switchyard.socketio.{unique_name}")


async def _user(cluster: dict[str, Any]) -> str:
    uid = new_user_id()
    await cluster["publisher"].publish(
        new_envelope(
            UserRegistered(
                user_id=uid,
                email=f"{uid}@example.com",
                display_name="Replica User",
                roles=["customer"],
                registered_at=utcnow(),
            ),
            service="auth",
        )
    )
    return uid


async def _direct(cluster: dict[str, Any], a: str, b: str) -> str:
    http: aiohttp.ClientSession = cluster["http"]
    found: dict[str, Any] = {}

    async def created() -> bool:
        async with http.post(
            cluster["gateway"] + PREFIX + "/conversations",
            json={"kind": "direct", "member_ids": [b]},
            headers={"Authorization": f"Bearer {cluster['keys'].token(a, ['customer'])}"},
        ) as response:
            found.update(await response.json())
            return response.status in (200, 201)

    await eventually(created)  # once the directory (fed by the bus) knows both users
    return str(found["id"])


async def _connect(cluster: dict[str, Any], uid: str, ip: str) -> SocketClient:
    client = SocketClient(
        cluster["gateway"],
        token=cluster["keys"].token(uid, ["customer"]),
        headers={"X-Forwarded-For": ip},
    )
    await client.connect()
    return client


async def test_messages_receipts_and_presence_cross_replicas_and_survive_a_kill(
    cluster: dict[str, Any],
) -> None:
    replicas: list[Replica] = cluster["replicas"]
    http = cluster["http"]
    ada, grace = await _user(cluster), await _user(cluster)
    cid = await _direct(cluster, ada, grace)
    ip_a, ip_g = ip_for_replica(0), ip_for_replica(1)
    a = await _connect(cluster, ada, ip_a)
    assert await replicas[0].sockets(http) == 1 and await replicas[1].sockets(http) == 0
    g = await _connect(cluster, grace, ip_g)
    assert await replicas[1].sockets(http) == 1

    await a.wait_for("presence", lambda p: p["user_id"] == grace and p["online"])
    for n in (1, 2):
        ack = await a.call(
            "send_message", {"conversation_id": cid, "body": f"m{n}", "client_msg_id": f"c{n}"}
        )
        assert ack["message"]["seq"] == n
    await g.wait_for("message", lambda m: m["message"]["seq"] == 2)
    await a.wait_for("receipt", lambda r: r["kind"] == "delivered" and r["seq"] == 2)
    await g.call("mark_read", {"conversation_id": cid, "seq": 2})
    await a.wait_for("receipt", lambda r: r["kind"] == "read" and r["seq"] == 2)
    back = await g.call(
        "send_message", {"conversation_id": cid, "body": "from 2", "client_msg_id": "g1"}
    )
    await a.wait_for("message", lambda m: m["message"]["id"] == back["message"]["id"])

    # Kill Grace's replica: she goes offline for Ada within 30 s, messages keep coming.
    killed_at = time.monotonic()
    replicas[1].kill()
    offline = await a.wait_for(
        "presence", lambda p: p["user_id"] == grace and not p["online"], timeout=30
    )
    assert offline["last_seen"] and time.monotonic() - killed_at < 30
    for n in range(4, 9):
        await a.call(
            "send_message", {"conversation_id": cid, "body": f"m{n}", "client_msg_id": f"c{n}"}
        )
    # She reconnects (the gateway now sends her to the live replica) and syncs.
    g2: SocketClient | None = None

    async def reconnected() -> bool:
        nonlocal g2
        try:
            g2 = await _connect(cluster, grace, ip_g)
        except Exception:  # noqa: BLE001 — the gateway may still try the dead replica once
            return False
        return True

    await eventually(reconnected, timeout=30, interval=0.5)
    assert g2 is not None
    assert await replicas[0].sockets(http) == 2
    page = await g2.call("sync", {"conversation_id": cid, "after_seq": 3})
    assert [m["seq"] for m in page["messages"]] == [4, 5, 6, 7, 8] and not page["has_more"]
    await a.wait_for("presence", lambda p: p["user_id"] == grace and p["online"] and p["last_seen"])
    sent = await cluster["tap"].wait_for("chat.message.sent", 8, conversation_id=cid)
    assert sorted(e["data"]["seq"] for e in sent) == list(range(1, 9))
    await a.disconnect()
    await g.disconnect()
    await g2.disconnect()
    await asyncio.sleep(0)

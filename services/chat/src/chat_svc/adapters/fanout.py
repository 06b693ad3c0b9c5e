"""Fan-out across replicas: python-socketio's ``AsyncAioPikaManager`` on RabbitMQ, made safe
for production RabbitMQ (3.13 / 4.x), for concurrent emits, and for delivery receipts.

- The stock manager declares a *transient, non-exclusive* queue — a deprecated feature in
  RabbitMQ 3.13 and 4.x (``transient_nonexcl_queues``) that a broker may refuse. Ours is
  server-named and **exclusive** (it lives exactly as long as the replica's connection),
  on a fan-out exchange of its own (``SOCKETIO_EXCHANGE``, never the events exchange).
- Prefetch 200 instead of 1, so a busy replica is not limited by one round trip per emit.
- The stock publisher sets up its connection lazily without holding its lock for the whole
  set-up: concurrent first emits found a connection without an exchange and were dropped
  ("giving up"). Ours connects once under the lock, publishes transient messages (the
  queues are transient) on a channel without publisher confirms and below the tracing
  instrumentation (an emit is no business event: a confirm round trip and a span per
  emit cost more than the emit), retries on a fresh channel, and counts what it could
  not send.
- Delivery receipts: a ``message`` is emitted once to the rooms of every member; on each
  replica the packet to each of its sockets gets its *own* ack callback (``ack_factory``,
  which knows whose socket it is), instead of the stock cross-host callback that routes
  every ack back to the emitting replica and keeps a callback there per emit forever when
  nobody acks. The callbacks live in the socket's own ack table and go with it; a socket
  with ``max_pending_acks`` unanswered gets further messages without one (a client that
  never acks cannot grow the table without bound; its ``sync`` marks them delivered).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from engineio import packet as eio_packet
from socketio import AsyncAioPikaManager, packet

log = logging.getLogger("chat.fanout")

AckFactory = Callable[[str, str, Any], Callable[..., Awaitable[None]] | None]
PREFETCH = 200
MAX_PENDING_ACKS = 1000
_PUBLISH_TRIES = 3


class FanoutManager(AsyncAioPikaManager):  # type: ignore[misc]
    def __init__(self, url: str, exchange: str) -> None:
        super().__init__(url=url, channel=exchange)
        self.ack_factory: AckFactory | None = None
        self.acked_events: frozenset[str] = frozenset()
        self.on_publish_failure: Callable[[], None] = lambda: None
        self.max_pending_acks = MAX_PENDING_ACKS
        self._publisher: Any = None
        self._publisher_lock = asyncio.Lock()

    async def _queue(self, channel: Any, exchange: Any) -> Any:
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        return queue

    async def _exchange(self, channel: Any) -> Any:
        return await channel.declare_exchange(self.channel, aio_pika.ExchangeType.FANOUT)

    async def _publisher_exchange(self, *, fresh: bool = False) -> Any:
        async with self._publisher_lock:
            if fresh or self._publisher is None:
                connection: Any = getattr(self, "publisher_connection", None)
                if connection is None:
                    connection = self.publisher_connection = await self._connection()
                channel = await connection.channel(publisher_confirms=False)
                await self._exchange(channel)
                self._publisher = await channel.get_underlay_channel()
            return self._publisher

    async def _publish(self, data: Any) -> None:
        body = self.json.dumps(data).encode()
        fresh = False
        for attempt in range(_PUBLISH_TRIES):
            try:
                channel = await self._publisher_exchange(fresh=fresh)
                await channel.basic_publish(body, exchange=self.channel, routing_key="*")
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 — any broker failure: new channel, again
                fresh = True
                log.warning(
                    "fan-out publish failed",
                    extra={"attempt": attempt + 1, "error": repr(error)},
                )
                await asyncio.sleep(0.05 * (attempt + 1))
        # Other replicas' sockets miss this emit; their clients recover it by `sync`.
        self.on_publish_failure()
        log.error("fan-out publish gave up; remote sockets miss this emit (sync recovers it)")

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        factory = self.ack_factory
        data = message.get("data")
        if (
            factory is None
            or message.get("event") not in self.acked_events
            or message.get("callback") is not None
            or message.get("binary")
            or not isinstance(data, list)
            or len(data) != 1
        ):
            await super()._handle_emit(message)
            return
        event, payload = message["event"], data[0]
        namespace = message.get("namespace") or "/"
        skip = message.get("skip_sid")
        skipped = set(skip) if isinstance(skip, list) else {skip}
        plain: list[Any] | None = None
        tasks = []
        for sid, eio_sid in self.get_participants(namespace, message.get("room")):
            if sid in skipped:
                continue
            pending = self.callbacks.get(sid)
            full = pending is not None and len(pending) > self.max_pending_acks  # + its counter
            callback = None if full else factory(event, sid, payload)
            if callback is None:
                if plain is None:
                    plain = _encoded(self.server, namespace, event, payload)
                for pkt in plain:
                    tasks.append(asyncio.create_task(self.server._send_eio_packet(eio_sid, pkt)))
                continue
            ack_id = self._generate_ack_id(sid, callback)
            pkt = self.server.packet_class(
                packet.EVENT, namespace=namespace, data=[event, payload], id=ack_id
            )
            tasks.append(asyncio.create_task(self.server._send_packet(eio_sid, pkt)))
        if tasks:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        """Stop listening and close the publisher's connection."""
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.cancel()
        connection: Any = getattr(self, "publisher_connection", None)
        if connection is not None:
            await connection.close()
            self.publisher_connection = None


def _encoded(server: Any, namespace: str, event: str, payload: Any) -> list[Any]:
    encoded = server.packet_class(packet.EVENT, namespace=namespace, data=[event, payload]).encode()
    if not isinstance(encoded, list):
        encoded = [encoded]
    return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in encoded]

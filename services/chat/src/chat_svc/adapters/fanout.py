"""Fan-out across replicas: python-socketio's ``AsyncAioPikaManager`` on RabbitMQ, made safe
for production RabbitMQ (3.13 / 4.x) and for delivery receipts.

- The stock manager declares a *transient, non-exclusive* queue — a deprecated feature in
  RabbitMQ 3.13 and 4.x (``transient_nonexcl_queues``) that a broker may refuse. Ours is
  server-named and **exclusive** (it lives exactly as long as the replica's connection),
  on a fan-out exchange of its own (``SOCKETIO_EXCHANGE``, never the events exchange).
- Prefetch 200 instead of 1, so a busy replica is not limited by one round trip per emit.
- Delivery receipts: a ``message`` emitted to ``user:<id>`` gets a *local* ack callback on
  the replica that holds the socket (``ack_factory``), instead of the stock cross-host
  callback, which routes every ack back to the emitting replica and keeps a callback per
  emit there forever when the recipient never acks. The local callback lives with the
  socket's own ack table and goes with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from socketio import AsyncAioPikaManager
from socketio.async_manager import AsyncManager

AckFactory = Callable[[str, str, Any], Callable[..., Awaitable[None]] | None]
PREFETCH = 200


class FanoutManager(AsyncAioPikaManager):  # type: ignore[misc]
    def __init__(self, url: str, exchange: str) -> None:
        super().__init__(url=url, channel=exchange)
        self.ack_factory: AckFactory | None = None

    async def _queue(self, channel: Any, exchange: Any) -> Any:
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        return queue

    async def _exchange(self, channel: Any) -> Any:
        return await channel.declare_exchange(self.channel, aio_pika.ExchangeType.FANOUT)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        factory = self.ack_factory
        data = message.get("data")
        room = message.get("room")
        if (
            factory is not None
            and message.get("callback") is None
            and not message.get("binary")
            and isinstance(data, list)
            and len(data) == 1
            and isinstance(room, str)
        ):
            callback = factory(message["event"], room, data[0])
            if callback is not None:
                await AsyncManager.emit(
                    self,
                    message["event"],
                    data[0],
                    namespace=message.get("namespace"),
                    room=room,
                    skip_sid=message.get("skip_sid"),
                    callback=callback,
                )
                return
        await super()._handle_emit(message)

    async def close(self) -> None:
        """Stop listening and close the publisher's connection."""
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.cancel()
        connection: Any = getattr(self, "publisher_connection", None)
        if connection is not None:
            await connection.close()
            self.publisher_connection = None

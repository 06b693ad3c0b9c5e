"""An event tap for tests: a throwaway queue on the test's exchange recording every event
published under a routing-key pattern (``"chat.#"``), so a test counts what a service
really sent through the broker.

    tap = await EventTap(amqp_url, exchange, "chat.#").start()
    tap = await tap_events(settings_overrides, "chat.#")  # on the test's own exchange
    sent = await tap.wait_for("chat.message.sent", count=3, conversation_id=cid)
    await tap.close()
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from switchyard.testing.waiting import eventually


class EventTap:
    def __init__(self, amqp_url: str, exchange: str, pattern: str = "#") -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.pattern = pattern
        self.events: list[dict[str, Any]] = []
        self._connection: Any = None

    async def start(self) -> EventTap:
        import aio_pika

        self._connection = await aio_pika.connect(self.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange, self.pattern)

        async def record(message: Any) -> None:
            async with message.process():
                self.events.append(json.loads(message.body))

        await queue.consume(record)
        return self

    def of(self, event_type: str, **data: Any) -> list[dict[str, Any]]:
        """The recorded events of ``event_type`` whose data has every ``data`` item."""
        return [
            event
            for event in self.events
            if event["type"] == event_type
            and all(event["data"].get(key) == value for key, value in data.items())
        ]

    async def wait_for(
        self, event_type: str, count: int = 1, *, timeout: float = 20.0, **data: Any
    ) -> list[dict[str, Any]]:
        """At least ``count`` such events (all of them, once there are enough)."""

        async def enough() -> bool:
            return len(self.of(event_type, **data)) >= count

        await eventually(enough, timeout)
        return self.of(event_type, **data)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


async def tap_events(settings_overrides: Mapping[str, Any], pattern: str = "#") -> EventTap:
    """A started tap on the test's broker and exchange (the ``settings_overrides`` fixture)."""
    return await EventTap(
        settings_overrides["amqp_url"], settings_overrides["bus_exchange"], pattern
    ).start()

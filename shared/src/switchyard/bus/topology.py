"""Queue names and arguments of a consumer's topology (DESIGN §3).

For a consumer queue ``Q`` bound to the topic exchange:

- ``Q``          quorum queue, bound by routing-key patterns;
- ``Q.retry.N``  one delay queue per retry tier: per-queue TTL, dead-lettering
                 back to ``Q`` through the default exchange (this adds the
                 ``x-death`` entry the attempt count is read from);
- ``Q.dlq``      quorum queue where messages are parked with reason headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

QUORUM = {"x-queue-type": "quorum"}


def retry_queue_name(queue: str, tier: int) -> str:
    return f"{queue}.retry.{tier}"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def queue_arguments(expires_ms: int | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = dict(QUORUM)
    if expires_ms is not None:
        arguments["x-expires"] = expires_ms
    return arguments


def retry_queue_arguments(
    queue: str, delay_seconds: float, expires_ms: int | None = None
) -> dict[str, Any]:
    return {
        **queue_arguments(expires_ms),
        "x-message-ttl": max(1, int(delay_seconds * 1000)),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        # Quorum queues dead-letter at-most-once unless told otherwise.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def attempts_from_x_death(queue: str, headers: Mapping[str, Any] | None) -> int:
    """How many retry tiers this message has already passed through."""
    if not headers:
        return 0
    deaths = headers.get("x-death") or []
    prefix = f"{queue}.retry."
    total = 0
    for death in deaths:
        if isinstance(death, Mapping) and str(death.get("queue", "")).startswith(prefix):
            total += int(death.get("count", 1))
    return total


async def declare_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_consumer_queues(
    channel: AbstractChannel,
    exchange: AbstractExchange,
    queue: str,
    patterns: Sequence[str],
    retry_delays: Sequence[float],
    expires_ms: int | None = None,
) -> AbstractQueue:
    """Declare ``queue`` with its retry tiers and DLQ, and bind it; returns the queue."""
    consumer_queue = await channel.declare_queue(
        queue, durable=True, arguments=queue_arguments(expires_ms)
    )
    for pattern in patterns:
        await consumer_queue.bind(exchange, routing_key=pattern)
    for tier, delay in enumerate(retry_delays, start=1):
        await channel.declare_queue(
            retry_queue_name(queue, tier),
            durable=True,
            arguments=retry_queue_arguments(queue, delay, expires_ms),
        )
    await channel.declare_queue(
        dlq_name(queue), durable=True, arguments=queue_arguments(expires_ms)
    )
    return consumer_queue

"""Queue names and arguments of a consumer's topology (DESIGN §3).

For a consumer queue ``Q`` bound to the topic exchange:

- ``Q``          quorum queue, bound by routing-key patterns, with an explicit
                 ``x-delivery-limit`` and ``Q.dlq`` as its dead-letter target: a
                 message the broker hands out that many times without an ack (crashed
                 consumers, requeues) is parked instead of looping — or, on RabbitMQ 4.x
                 where quorum queues default to a limit of 20, instead of being dropped;
- ``Q.retry.N``  one delay queue per retry tier: per-queue TTL, dead-lettering
                 back to ``Q`` through the default exchange;
- ``Q.dlq``      quorum queue where messages are parked with reason headers.

Attempts are counted in our own header :data:`H_ATTEMPT`, set on every retry
republish. RabbitMQ 3.13.3+ and 4.x ignore an ``x-death`` header that a client
publishes, so summing ``x-death`` would restart the count on every tier there;
``x-death`` is read only for messages that carry no :data:`H_ATTEMPT` (put on a
retry tier by an earlier version).

A queue that already exists with other arguments (declared by an earlier
version) is used as it is, with an error in the log saying how to migrate it:
RabbitMQ refuses a redeclaration with different arguments (``PRECONDITION_FAILED``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

log = logging.getLogger("switchyard.bus.topology")

# Quorum queues in production. Classic only for throwaway namespaces (the tests): RabbitMQ
# 3.10 stalls the whole broker (no new connections for 5-45 s) while a batch of used quorum
# queues with ``x-expires`` is deleted; with classic queues the same churn stalls nothing.
QueueType = Literal["quorum", "classic"]
H_ATTEMPT = "x-switchyard-attempt"  # failed attempts so far (retry tiers passed)
DEFAULT_DELIVERY_LIMIT = 20
# Headers the broker owns: never copied into a message we publish ourselves.
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        "x-acquired-count",
    }
)


class MalformedHeaders(ValueError):
    """A header the consumer relies on has a value it cannot use: the message is poison."""


def retry_queue_name(queue: str, tier: int) -> str:
    return f"{queue}.retry.{tier}"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def queue_arguments(
    expires_ms: int | None = None, queue_type: QueueType = "quorum"
) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": queue_type}
    if expires_ms is not None:
        arguments["x-expires"] = expires_ms
    return arguments


def retry_queue_arguments(
    queue: str,
    delay_seconds: float,
    expires_ms: int | None = None,
    queue_type: QueueType = "quorum",
) -> dict[str, Any]:
    arguments = {
        **queue_arguments(expires_ms, queue_type),
        "x-message-ttl": max(1, int(delay_seconds * 1000)),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-overflow": "reject-publish",
    }
    if queue_type == "quorum":  # classic queues refuse it
        # Quorum queues dead-letter at-most-once unless told otherwise.
        arguments["x-dead-letter-strategy"] = "at-least-once"
    return arguments


def consumer_queue_arguments(
    queue: str,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    expires_ms: int | None = None,
    queue_type: QueueType = "quorum",
) -> dict[str, Any]:
    """``Q``: quorum, an explicit delivery limit, and ``Q.dlq`` as dead-letter target
    (at-least-once dead-lettering, which needs ``reject-publish`` overflow; no length
    limit is set, so nothing is ever refused for it). A classic queue (throwaway test
    namespaces) gets neither the delivery limit nor the strategy: it refuses both."""
    arguments = {
        **queue_arguments(expires_ms, queue_type),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_name(queue),
        "x-overflow": "reject-publish",
    }
    if queue_type == "quorum":
        arguments["x-delivery-limit"] = delivery_limit
        arguments["x-dead-letter-strategy"] = "at-least-once"
    return arguments


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:  # bool is not a count
        raise MalformedHeaders(f"{what} is not a non-negative integer: {value!r}"[:200])
    return value


def attempts_from_headers(queue: str, headers: Mapping[str, Any] | None) -> int:
    """How many retry tiers this message has already passed through.

    Raises :class:`MalformedHeaders` when the count cannot be read (poison).
    """
    if not headers:
        return 0
    if H_ATTEMPT in headers:
        return _count(headers[H_ATTEMPT], H_ATTEMPT)
    return attempts_from_x_death(queue, headers)


def attempts_from_x_death(queue: str, headers: Mapping[str, Any] | None) -> int:
    """The fallback for messages retried by an earlier version: the ``x-death`` entries
    of ``queue``'s retry tiers, summed."""
    if not headers or headers.get("x-death") is None:
        return 0
    deaths = headers["x-death"]
    if not isinstance(deaths, list | tuple):
        raise MalformedHeaders(f"x-death is not a list: {type(deaths).__name__}")
    prefix = f"{queue}.retry."
    total = 0
    for death in deaths:
        if not isinstance(death, Mapping):
            raise MalformedHeaders("an x-death entry is not a table")
        if str(death.get("queue", "")).startswith(prefix):
            total += _count(death.get("count", 1), "an x-death count")
    return total


async def declare_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_queue(
    channel: AbstractChannel, name: str, arguments: Mapping[str, Any]
) -> AbstractQueue:
    """Declare ``name`` on ``channel`` with ``arguments``; when it already exists with other
    arguments, use it as it is and say so in the log.

    The declaration is tried first on a throwaway channel: a refused redeclaration
    (``PRECONDITION_FAILED``) closes the channel it was made on, and ``channel`` must
    stay open for consuming and recovery.
    """
    underlay = await channel.get_underlay_channel()
    probe = await underlay.connection.channel(publisher_confirms=False)
    try:
        await probe.queue_declare(name, durable=True, arguments=dict(arguments))
        legacy = False
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        legacy = True
        log.error(
            "queue exists with other arguments (declared by an earlier version); using it as it"
            " is. To migrate, drain and delete it, or apply a policy with the same settings"
            " (see the README, 'Upgrading queues')",
            extra={"queue": name, "wanted": dict(arguments), "broker_said": str(error)[:300]},
        )
    finally:
        if not probe.is_closed:
            await probe.close()
    if legacy:
        return await channel.declare_queue(name, passive=True)
    return await channel.declare_queue(name, durable=True, arguments=dict(arguments))


async def declare_consumer_queues(
    channel: AbstractChannel,
    exchange: AbstractExchange,
    queue: str,
    patterns: Sequence[str],
    retry_delays: Sequence[float],
    expires_ms: int | None = None,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    queue_type: QueueType = "quorum",
) -> AbstractQueue:
    """Declare ``queue`` with its retry tiers and DLQ, and bind it; returns the queue.

    The DLQ comes first: it is the consumer queue's dead-letter target.
    """
    await declare_queue(channel, dlq_name(queue), queue_arguments(expires_ms, queue_type))
    for tier, delay in enumerate(retry_delays, start=1):
        await declare_queue(
            channel,
            retry_queue_name(queue, tier),
            retry_queue_arguments(queue, delay, expires_ms, queue_type),
        )
    consumer_queue = await declare_queue(
        channel, queue, consumer_queue_arguments(queue, delivery_limit, expires_ms, queue_type)
    )
    for pattern in patterns:
        await consumer_queue.bind(exchange, routing_key=pattern)
    return consumer_queue

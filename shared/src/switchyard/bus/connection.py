"""The process's broker connection and the publishing side of the bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from opentelemetry import context as otel_context
from pamqp.commands import Basic
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from switchyard.bus.topology import DEFAULT_DELIVERY_LIMIT, QueueType, declare_exchange
from switchyard.envelope import Envelope
from switchyard.metrics import Metrics
from switchyard.tracing import context_from_traceparent

log = logging.getLogger("switchyard.bus")

CONTENT_TYPE = "application/cloudevents+json"

# Failures that go away once the robust connection has reconnected.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    asyncio.TimeoutError,
)


class PublishFailed(Exception):
    """The broker did not confirm a message (nack, or no confirm before the deadline)."""


class UnroutableEvent(PublishFailed):
    """The broker returned a mandatory message: no queue is bound for its routing key."""

    def __init__(self, routing_key: str, reply_text: str) -> None:
        super().__init__(f"no queue bound for {routing_key!r} ({reply_text})")
        self.routing_key = routing_key


class _Nacked(Exception):
    pass


# What a publish retries: the broker or the connection went away, or the broker nacked.
_RETRIED_PUBLISH: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, _Nacked)


class Bus:
    """Publishing with confirms and ``mandatory``, and the connection consumers use.

    Two robust connections per process, as RabbitMQ advises: a memory or disk alarm
    blocks the connections that publish, and a consumer sharing one could then no
    longer ack. The consuming connection is opened by the first consumer.
    """

    def __init__(
        self,
        *,
        url: str,
        exchange: str,
        service: str,
        metrics: Metrics,
        queue_prefix: str = "",
        retry_delays: Sequence[float] = (1.0, 10.0, 60.0, 300.0),
        prefetch: int = 32,
        publish_timeout: float = 30.0,
        queue_expires_ms: int | None = None,
        queue_type: QueueType = "quorum",
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        handler_timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.service = service
        self.metrics = metrics
        self.queue_prefix = queue_prefix
        self.retry_delays = list(retry_delays)
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.queue_expires_ms = queue_expires_ms
        self.queue_type: QueueType = queue_type
        self.delivery_limit = delivery_limit
        self.handler_timeout = handler_timeout
        self._published: dict[str, Any] = {}
        self._connection: AbstractRobustConnection | None = None
        self._consume_connection: AbstractRobustConnection | None = None
        self._consume_lock = asyncio.Lock()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def connect(self, timeout: float = 30.0) -> None:
        """Open the publishing connection (retrying for ``timeout`` seconds) and channel."""
        self._connection = await self._open("publish", timeout)
        self._channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await declare_exchange(self._channel, self.exchange_name)
        log.info("connected to the broker", extra={"exchange": self.exchange_name})

    async def _open(self, role: str, timeout: float) -> AbstractRobustConnection:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            wait=wait_exponential(multiplier=0.2, max=3),
            stop=stop_after_delay(timeout),
            reraise=True,
        ):
            with attempt:
                return await aio_pika.connect_robust(
                    self.url,
                    client_properties={
                        "connection_name": f"{self.service} ({self.queue_prefix or 'main'}) {role}"
                    },
                    reconnect_interval=1.0,
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def consume_connection(self, timeout: float = 30.0) -> AbstractRobustConnection:
        """The connection consumers open their channels on (never used for publishing)."""
        async with self._consume_lock:
            if self._consume_connection is None:
                self._consume_connection = await self._open("consume", timeout)
            return self._consume_connection

    async def close(self) -> None:
        for connection in (self._consume_connection, self._connection):
            if connection is not None:
                await connection.close()
        self._consume_connection = self._connection = None

    @property
    def connection(self) -> AbstractRobustConnection:
        """The publishing connection."""
        if self._connection is None:
            raise RuntimeError("the bus is not connected")
        return self._connection

    @property
    def channel(self) -> AbstractChannel:
        """The publishing channel (confirms on)."""
        if self._channel is None:
            raise RuntimeError("the bus is not connected")
        return self._channel

    @property
    def exchange(self) -> AbstractExchange:
        if self._exchange is None:
            raise RuntimeError("the bus is not connected")
        return self._exchange

    @property
    def connected(self) -> bool:
        connection = self._connection
        consuming = self._consume_connection
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
            and (consuming is None or (not consuming.is_closed and consuming.connected.is_set()))
        )

    async def ping(self) -> None:
        """Readiness: raises while the broker is unreachable.

        A round trip (passive declare of the exchange) catches a silently dead
        connection that the heartbeat has not noticed yet.
        """
        if not self.connected or self._channel is None:
            raise ConnectionError("the broker connection is down")
        underlay = await asyncio.wait_for(self._channel.get_underlay_channel(), 1.5)
        await asyncio.wait_for(
            underlay.exchange_declare(exchange=self.exchange_name, passive=True), 1.5
        )

    def queue_name(self, handler: str) -> str:
        return f"{self.queue_prefix}{self.service}.{handler}"

    # -- publishing ----------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        """Publish one event with a confirm; waits out reconnects up to ``publish_timeout``.

        Raises :class:`UnroutableEvent` when no queue is bound for the event type
        (counted in ``events_unroutable_total``), :class:`PublishFailed` when the
        broker never confirms.
        """
        message = aio_pika.Message(
            body=envelope.to_json(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=envelope.id,
            correlation_id=envelope.correlationid,
            type=envelope.type,
            app_id=self.service,
            timestamp=envelope.time,
            headers=dict(envelope.headers()),
        )
        # Continue the trace of the request that produced the event, even when the
        # outbox relay publishes it later from its own task.
        token = (
            otel_context.attach(context_from_traceparent(envelope.traceparent))
            if envelope.traceparent
            else None
        )
        try:
            await self._publish(message, envelope.type, exchange=None)
        except UnroutableEvent:
            self.metrics.events_unroutable.labels(self.service, envelope.type).inc()
            log.error(
                "unroutable event: no queue is bound for its type",
                extra={"event_type": envelope.type, "event_id": envelope.id},
            )
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        counter = self._published.get(envelope.type)
        if counter is None:
            counter = self._published[envelope.type] = self.metrics.events_published.labels(
                self.service, envelope.type
            )
        counter.inc()

    async def send_to_queue(
        self, queue: str, body: bytes, *, headers: Mapping[str, Any], properties: Mapping[str, Any]
    ) -> None:
        """Put a message straight into ``queue`` (retry tiers, DLQ, replays), with a confirm."""
        message = aio_pika.Message(
            body=body,
            headers=dict(headers),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **{k: v for k, v in properties.items() if v is not None},
        )
        await self._publish(message, queue, exchange="")

    async def _publish(
        self, message: aio_pika.Message, routing_key: str, *, exchange: str | None
    ) -> None:
        try:  # the common case, without building a retry loop
            await self._publish_once(message, routing_key, exchange)
            return
        except _RETRIED_PUBLISH as error:
            log.info("publish interrupted; retrying", extra={"error": repr(error)})
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_RETRIED_PUBLISH),
                wait=wait_exponential(multiplier=0.05, max=2),
                stop=stop_after_delay(self.publish_timeout),
                reraise=True,
            ):
                with attempt:
                    await self._publish_once(message, routing_key, exchange)
        except _RETRIED_PUBLISH as error:
            raise PublishFailed(
                f"not confirmed within {self.publish_timeout:.0f}s: {error!r}"
            ) from error

    async def _publish_once(
        self, message: aio_pika.Message, routing_key: str, exchange: str | None
    ) -> None:
        channel = self._channel
        if channel is None or channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("publishing channel is not open")
        target = self.exchange if exchange is None else channel.default_exchange
        try:
            await target.publish(message, routing_key=routing_key, mandatory=True, timeout=10)
        except aiormq.exceptions.DeliveryError as error:
            frame = error.frame
            if isinstance(frame, Basic.Return):
                raise UnroutableEvent(routing_key, str(frame.reply_text)) from None
            raise _Nacked(str(error)) from None


__all__ = ["Bus", "PublishFailed", "TRANSIENT_ERRORS", "UnroutableEvent"]

"""Consumers: manual ack after success, retry tiers, DLQ with reasons, inbox de-duplication.

What happens to a delivery:

1. The body must be a CloudEvents envelope of a known type and version whose
   data validates; otherwise it is poison and goes to ``<queue>.dlq`` at once.
2. The inbox claims (queue, source, id); a finished key is acked as duplicate.
3. The handler runs. Success → inbox done, ack. :class:`PermanentError` → DLQ.
   Any other exception → the next retry tier ``<queue>.retry.<n>`` (the attempt
   count travels in our own header ``x-switchyard-attempt``; a message without it is
   counted from ``x-death``), or the DLQ once the tiers are used up. A count that
   cannot be read is poison. A handler still running after its timeout
   (``BUS_HANDLER_TIMEOUT`` or the subscription's) is cancelled: a failure like others.
4. While the handler runs, its inbox lease is renewed; a copy of the event arriving
   meanwhile (a redelivery after the holder's channel dropped) waits for the holder.
   Handlers run in a task of the consumer's, so a dropped channel does not cancel them.

A message is acked only after its successor (retry or DLQ copy) is confirmed by
the broker, so a crash at any point redelivers rather than loses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from switchyard.bus.connection import Bus
from switchyard.bus.errors import (
    ClaimLost,
    HandlerTimeout,
    PermanentError,
    PoisonMessage,
    RetryLater,
)
from switchyard.bus.headers import (
    H_ATTEMPTS,
    H_EXC_MESSAGE,
    H_EXC_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_QUEUE,
    H_ORIGINAL_ROUTING_KEY,
    H_REASON,
)
from switchyard.bus.inbox import Claim, Inbox
from switchyard.bus.registry import Handler, HandlerRegistry, Subscription
from switchyard.bus.topology import (
    BROKER_HEADERS,
    H_ATTEMPT,
    MalformedHeaders,
    attempts_from_headers,
    declare_consumer_queues,
    dlq_name,
    retry_queue_name,
)
from switchyard.envelope import (
    CATALOG,
    Envelope,
    Event,
    EventCatalog,
    UnknownEventType,
    UnknownEventVersion,
    format_time,
)
from switchyard.leases import kept_alive
from switchyard.logging import request_id_var

log = logging.getLogger("switchyard.bus.consumer")

_MAX_MESSAGE_CHARS = 1000
REQUEUE_PAUSE = 1.0  # seconds before an unsettled message goes back to the broker
CHANNEL_TIMEOUT = 5.0  # seconds a broker round trip may take while stopping


def decode_event(
    body: bytes, *, catalog: EventCatalog, attempt: int = 1, redelivered: bool = False
) -> Event[Any]:
    """Turn a message body into a typed :class:`Event`, or raise :class:`PoisonMessage`."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise PoisonMessage("body is not JSON") from None
        fields = ", ".join(
            ".".join(str(p) for p in item["loc"]) or "envelope" for item in error.errors()[:5]
        )
        raise PoisonMessage(f"not a valid CloudEvents envelope ({fields})") from None
    try:
        data = catalog.decode(envelope)
    except UnknownEventType:
        raise PoisonMessage(f"unknown event type {envelope.type!r}") from None
    except UnknownEventVersion:
        raise PoisonMessage(
            f"unknown version of {envelope.type!r} ({envelope.dataschema})"
        ) from None
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()[:5]
        )
        raise PoisonMessage(f"data fails the {envelope.type} schema: {details}") from None
    return Event(envelope=envelope, data=data, attempt=attempt, redelivered=redelivered)


def _now_text() -> str:
    return format_time(datetime.now(UTC))


def _republished_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The headers a retry or DLQ copy carries: the original ones minus those the broker
    owns (``x-death`` is refused from clients by RabbitMQ 3.13.3+ anyway)."""
    return {k: v for k, v in (message.headers or {}).items() if k not in BROKER_HEADERS}


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        "content_type": message.content_type,
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "type": message.type,
        "app_id": message.app_id,
        "timestamp": message.timestamp,
    }


async def park(
    bus: Bus,
    message: AbstractIncomingMessage,
    error: BaseException,
    *,
    queue: str,
    dlq: str,
    attempts: int,
    reason: str,
    exchange: str | None = None,
) -> None:
    """Put a copy of ``message`` into ``dlq`` with the reason headers (confirmed); the caller
    acks the original afterwards. ``exchange``: replay routes the message through it again
    (its original routing key) rather than to ``queue`` — for a queue that does not outlive
    its process."""
    headers = _republished_headers(message)
    now = _now_text()
    headers.setdefault(H_FIRST_FAILURE, now)
    headers.setdefault(H_ORIGINAL_ROUTING_KEY, message.routing_key or "")
    headers[H_LAST_FAILURE] = now
    headers[H_REASON] = reason
    headers[H_EXC_TYPE] = type(error).__name__
    headers[H_EXC_MESSAGE] = str(error)[:_MAX_MESSAGE_CHARS]
    headers[H_ATTEMPTS] = attempts
    headers[H_ORIGINAL_QUEUE] = queue
    if exchange is not None:
        headers[H_ORIGINAL_EXCHANGE] = exchange
    await bus.send_to_queue(dlq, message.body, headers=headers, properties=_properties(message))


class Consumer:
    """Consumes one subscription's queue; competing replicas share the queue."""

    def __init__(
        self,
        bus: Bus,
        subscription: Subscription,
        *,
        inbox: Inbox | None = None,
        catalog: EventCatalog = CATALOG,
    ) -> None:
        self.bus = bus
        self.subscription = subscription
        self.queue_name = bus.queue_name(subscription.name)
        self.inbox = inbox if subscription.deduplicate else None
        self.catalog = catalog
        self.timeout = subscription.timeout or bus.handler_timeout
        self.retry_delays = list(
            subscription.retry_delays if subscription.retry_delays is not None else bus.retry_delays
        )
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._work: set[asyncio.Task[None]] = set()
        metrics = bus.metrics
        self._outcomes = {
            outcome: metrics.events_consumed.labels(bus.service, self.queue_name, outcome)
            for outcome in ("ok", "duplicate", "retry", "dead")
        }
        self._duration = metrics.event_handler_duration.labels(bus.service, self.queue_name)

    async def declare(self) -> AbstractQueue:
        if self._channel is None:
            connection = await self.bus.consume_connection()
            self._channel = await connection.channel()
            await self._channel.set_qos(prefetch_count=self.bus.prefetch)
        exchange = await self._channel.declare_exchange(
            self.bus.exchange_name, "topic", durable=True
        )
        self._queue = await declare_consumer_queues(
            self._channel,
            exchange,
            self.queue_name,
            self.subscription.event_types,
            self.retry_delays,
            self.bus.queue_expires_ms,
            self.bus.delivery_limit,
            self.bus.queue_type,
        )
        return self._queue

    async def start(self) -> None:
        queue = await self.declare()
        self._consumer_tag = await queue.consume(self._on_message)
        log.info(
            "consuming",
            extra={"queue": self.queue_name, "event_types": list(self.subscription.event_types)},
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, let in-flight handlers finish, close the channel."""
        if self._queue is not None and self._consumer_tag is not None:
            try:
                # Bounded: with the broker unreachable, the robust channel would wait for it.
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), CHANNEL_TIMEOUT)
            # The channel may already be gone; nothing left to cancel.
            except Exception as error:  # noqa: BLE001
                log.warning(
                    "could not cancel consumer",
                    extra={"queue": self.queue_name, "error": repr(error)},
                )
            self._consumer_tag = None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning(
                "in-flight handlers still running at shutdown; cancelling them",
                extra={"queue": self.queue_name, "inflight": self._inflight},
            )
            # Cancel until done: a cancellation can be swallowed on Python 3.11 (wait_for).
            while pending := [task for task in self._work if not task.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        if self._channel is not None and not self._channel.is_closed:
            try:
                await asyncio.wait_for(self._channel.close(), CHANNEL_TIMEOUT)
            except TimeoutError:
                log.warning("the channel did not close in time", extra={"queue": self.queue_name})
        self._channel = None

    # -- message processing ----------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # The client library cancels its delivery callbacks when their channel closes. The
        # handler must not stop half-way for that: it runs in a task of ours and finishes
        # (its inbox lease renewed), so a redelivered copy finds it done, not half done.
        task = asyncio.ensure_future(self._settle(message))
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        await asyncio.shield(task)

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        self._inflight += 1
        self._idle.clear()
        try:
            await self._process(message)
        except Exception:  # the message stays unacked; the broker redelivers it
            log.exception(
                "could not settle a message; it will be redelivered",
                extra={"queue": self.queue_name},
            )
            await self._requeue(message)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        """Give a message we could not settle back to the broker — after a pause, so a
        failure that repeats (a broker in trouble, a bug) cannot spin in a hot loop."""
        await asyncio.sleep(REQUEUE_PAUSE)
        channel = self._channel
        if channel is None or channel.is_closed:
            return  # a closed channel returns its unacked messages by itself
        try:
            # reject, not nack: from RabbitMQ 4.3 only a reject counts towards the queue's
            # delivery limit, which is what parks a message that can never be settled.
            await message.reject(requeue=True)
        # The channel closed meanwhile: same outcome.
        except Exception as error:  # noqa: BLE001
            log.warning("could not requeue", extra={"queue": self.queue_name, "error": repr(error)})

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            attempts = attempts_from_headers(self.queue_name, message.headers)
        except MalformedHeaders as malformed:
            await self._dead_letter(
                message, PoisonMessage(str(malformed)), attempts=0, reason="poison"
            )
            return
        try:
            event = decode_event(
                message.body,
                catalog=self.catalog,
                attempt=attempts + 1,
                redelivered=bool(message.redelivered),
            )
        except PoisonMessage as poison:
            await self._dead_letter(message, poison, attempts=attempts, reason="poison")
            return

        key = Inbox.key(self.queue_name, event.envelope) if self.inbox else None
        claim_token = ""
        if self.inbox is not None and key is not None:
            try:
                claim = await self.inbox.claim_or_wait(
                    key, wait=self.timeout + self.inbox.lease_seconds
                )
            except PyMongoError as error:
                # The store is unreachable: wait on the retry tiers instead of letting the
                # broker redeliver at once, over and over.
                log.warning(
                    "inbox unavailable", extra={"queue": self.queue_name, "error": repr(error)}
                )
                await self._retry_or_dead_letter(message, error, attempts)
                return
            if claim.outcome is Claim.DUPLICATE:
                await message.ack()
                self._outcomes["duplicate"].inc()
                return
            if claim.outcome is Claim.BUSY:
                await self._retry_or_dead_letter(
                    message, RuntimeError("another consumer holds this event"), attempts
                )
                return
            claim_token = claim.token

        token = request_id_var.set(event.envelope.correlationid)
        started = time.perf_counter()
        try:
            await self._run_handler(event, key, claim_token)
        except asyncio.CancelledError:
            raise
        except PermanentError as error:
            await self._release(key, claim_token)
            log.warning("handler gave up on an event", extra=self._log_fields(event, error))
            await self._dead_letter(message, error, attempts=attempts + 1, reason="permanent-error")
            return
        except Exception as error:
            await self._release(key, claim_token)
            log.warning("handler failed", exc_info=True, extra=self._log_fields(event, error))
            await self._retry_or_dead_letter(message, error, attempts)
            return
        finally:
            self._duration.observe(time.perf_counter() - started)
            request_id_var.reset(token)
        if self.inbox is not None and key is not None:
            try:
                await self.inbox.complete(key)
            except PyMongoError as error:
                # The effect happened; acking is right. The claim stays "processing" until
                # its lease runs out, so a later copy is at worst handled again (at least once).
                log.warning(
                    "handled, but the inbox could not record it",
                    extra={"queue": self.queue_name, "event_id": event.id, "error": repr(error)},
                )
        await message.ack()
        self._outcomes["ok"].inc()

    async def _run_handler(self, event: Event[Any], key: str | None, claim_token: str) -> None:
        """The handler, cancelled past its timeout; with an inbox claim, the claim's lease is
        renewed meanwhile, and losing it to another delivery cancels the handler."""
        work = asyncio.ensure_future(self.subscription.handler(event))
        inbox = self.inbox
        if inbox is None or key is None:
            await self._within_timeout(work)
            return
        lease_until = time.time() + inbox.lease_seconds

        async def renew() -> bool:
            nonlocal lease_until
            held = await inbox.renew(key, claim_token)
            if held:
                lease_until = time.time() + inbox.lease_seconds
            return held

        async with kept_alive(
            renew,
            every=inbox.lease_seconds / 3,
            what=f"inbox claim {key}",
            on_lost=work.cancel,
            valid_until=lambda: lease_until,
        ) as tenure:
            try:
                await self._within_timeout(work)
            except asyncio.CancelledError:
                if tenure.lost and work.cancelled():
                    raise ClaimLost(f"another delivery took over {key}") from None
                raise

    async def _within_timeout(self, work: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(work, self.timeout)
        except TimeoutError:
            raise HandlerTimeout(
                f"the handler did not finish within {self.timeout:g} s; it was cancelled"
            ) from None

    def _log_fields(self, event: Event[Any], error: BaseException) -> dict[str, Any]:
        return {
            "queue": self.queue_name,
            "event_id": event.id,
            "event_type": event.type,
            "attempt": event.attempt,
            "error_type": type(error).__name__,
        }

    async def _release(self, key: str | None, claim_token: str) -> None:
        if self.inbox is None or key is None:
            return
        try:
            await self.inbox.release(key, claim_token)
        except PyMongoError as error:
            # The claim then ends with its lease; the retry still happens.
            log.warning(
                "could not release an inbox claim",
                extra={"queue": self.queue_name, "error": repr(error)},
            )

    async def _retry_or_dead_letter(
        self, message: AbstractIncomingMessage, error: BaseException, attempts: int
    ) -> None:
        if attempts >= len(self.retry_delays):
            await self._dead_letter(
                message, error, attempts=attempts + 1, reason="retries-exhausted"
            )
            return
        tier = self._next_tier(attempts, error)
        headers = _republished_headers(message)
        now = _now_text()
        headers.setdefault(H_FIRST_FAILURE, now)
        headers.setdefault(H_ORIGINAL_ROUTING_KEY, message.routing_key or "")
        headers[H_LAST_FAILURE] = now
        headers[H_EXC_TYPE] = type(error).__name__
        headers[H_EXC_MESSAGE] = str(error)[:_MAX_MESSAGE_CHARS]
        headers[H_ATTEMPT] = tier
        await self.bus.send_to_queue(
            retry_queue_name(self.queue_name, tier),
            message.body,
            headers=headers,
            properties=_properties(message),
        )
        await message.ack()
        self._outcomes["retry"].inc()

    def _next_tier(self, attempts: int, error: BaseException) -> int:
        """The next tier; for :class:`RetryLater`, the first one waiting at least as long as
        asked (the last tier when none does). Skipped tiers count as attempts."""
        tier = attempts + 1
        if isinstance(error, RetryLater):
            while tier < len(self.retry_delays) and self.retry_delays[tier - 1] < error.after:
                tier += 1
        return tier

    async def _dead_letter(
        self, message: AbstractIncomingMessage, error: BaseException, *, attempts: int, reason: str
    ) -> None:
        await park(
            self.bus,
            message,
            error,
            queue=self.queue_name,
            dlq=dlq_name(self.queue_name),
            attempts=attempts,
            reason=reason,
        )
        await message.ack()
        self._outcomes["dead"].inc()
        log.error(
            "message parked in the DLQ",
            extra={
                "queue": self.queue_name,
                "reason": reason,
                "error_type": type(error).__name__,
                "error": str(error)[:200],
                "attempts": attempts,
                "message_id": message.message_id,
            },
        )


__all__ = [
    "Consumer",
    "Handler",
    "HandlerRegistry",
    "Subscription",
    "decode_event",
    "park",
]

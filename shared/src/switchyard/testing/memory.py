"""An in-memory bus with the bus's semantics, minus the broker, for fast unit tests.

Same rules as the real consumer: poison goes straight to the dead letters, an
event id is handled once per subscription, a failing handler is retried once per
tier and then dead-lettered. Delays are not simulated; retry timing and the
real DLQ are tested against RabbitMQ.

:class:`InMemoryOutbox` stands where the outbox and its relay stand in a service, for
unit tests of commands whose repositories are in-memory fakes: a fake stages the
events of each write, ``notify`` is the relay's wake-up, ``relay()`` publishes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from switchyard.bus.consumer import HandlerRegistry, Subscription, decode_event
from switchyard.bus.errors import PermanentError, PoisonMessage
from switchyard.envelope import CATALOG, Envelope, EventCatalog


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    parts = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:[^.]+(?:\.[^.]+)*)?")
        elif word == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(word))
    regex = r"\.".join(parts).replace(r"\.(?:[^.]+(?:\.[^.]+)*)?", r"(?:\.[^.]+)*")
    return re.fullmatch(regex, routing_key) is not None


@dataclass
class DeadLetter:
    subscription: str
    body: bytes
    reason: str
    error: BaseException
    attempts: int


@dataclass
class InMemoryBus:
    catalog: EventCatalog = CATALOG
    retry_tiers: int = 4
    published: list[Envelope] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    _subscriptions: list[Subscription] = field(default_factory=list)
    _seen: set[tuple[str, str, str]] = field(default_factory=set)

    def subscribe(self, registry: HandlerRegistry | list[Subscription]) -> None:
        self._subscriptions.extend(registry)

    async def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)
        await self.deliver(envelope.to_json(), routing_key=envelope.type)

    async def deliver(self, body: bytes, *, routing_key: str) -> None:
        """Hand a raw message body to every matching subscription."""
        for subscription in self._subscriptions:
            if any(topic_matches(p, routing_key) for p in subscription.event_types):
                await self._handle(subscription, body)

    def of_type(self, event_type: str) -> list[Envelope]:
        return [e for e in self.published if e.type == event_type]

    async def _handle(self, subscription: Subscription, body: bytes) -> None:
        try:
            event = decode_event(body, catalog=self.catalog)
        except PoisonMessage as poison:
            self.dead_letters.append(DeadLetter(subscription.name, body, "poison", poison, 0))
            return
        key = (subscription.name, event.source, event.id)
        if subscription.deduplicate and key in self._seen:
            return
        last: BaseException | None = None
        for attempt in range(1, self.retry_tiers + 2):
            try:
                await subscription.handler(
                    type(event)(envelope=event.envelope, data=event.data, attempt=attempt)
                )
            except PermanentError as error:
                self.dead_letters.append(
                    DeadLetter(subscription.name, body, "permanent-error", error, attempt)
                )
                return
            # Retried like the real consumer would.
            except Exception as error:  # noqa: BLE001
                last = error
                continue
            self._seen.add(key)
            return
        assert last is not None
        self.dead_letters.append(
            DeadLetter(subscription.name, body, "retries-exhausted", last, self.retry_tiers + 1)
        )


@dataclass
class InMemoryOutbox:
    """The outbox of a unit test: what in-memory repositories stage with their writes.

    A repository fake calls :meth:`stage` with the events of each write it commits (and
    none for a write its guard refused), the command calls :meth:`notify` as it would the
    relay's, and the test calls :meth:`relay` to publish what was staged, in order, to
    :attr:`bus`. Each event is first decoded against the bus's catalog, as a consumer
    would: an event its contract rejects fails the test instead of being dead-lettered.
    """

    bus: InMemoryBus = field(default_factory=InMemoryBus)
    staged: list[Envelope] = field(default_factory=list)
    notified: int = 0

    def stage(self, events: Iterable[Envelope]) -> None:
        self.staged.extend(events)

    def notify(self) -> None:
        self.notified += 1

    async def relay(self) -> list[Envelope]:
        """Publish everything staged so far; the events published."""
        batch, self.staged = self.staged, []
        for envelope in batch:
            decode_event(envelope.to_json(), catalog=self.bus.catalog)  # raises PoisonMessage
            await self.bus.publish(envelope)
        return batch


__all__: list[Any] = ["DeadLetter", "InMemoryBus", "InMemoryOutbox", "topic_matches"]

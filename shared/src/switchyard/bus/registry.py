"""A service's subscriptions: handlers and the event types their queues are bound to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from switchyard.envelope import Event

Handler = Callable[[Event[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A handler and the event types (routing-key patterns) its queue is bound to."""

    name: str
    event_types: tuple[str, ...]
    handler: Handler
    deduplicate: bool = True
    timeout: float | None = None  # seconds; None: the bus's BUS_HANDLER_TIMEOUT
    # This queue's own retry tiers (seconds); None: the bus's BUS_RETRY_DELAYS.
    retry_delays: tuple[float, ...] | None = None


class HandlerRegistry:
    """The explicit list of a service's subscriptions."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}

    def add(
        self,
        name: str,
        event_types: Sequence[str],
        handler: Handler,
        *,
        deduplicate: bool = True,
        timeout: float | None = None,
        retry_delays: Sequence[float] | None = None,
    ) -> None:
        if name in self._subscriptions:
            raise ValueError(f"a subscription named {name!r} already exists")
        self._subscriptions[name] = Subscription(
            name,
            tuple(event_types),
            handler,
            deduplicate,
            timeout,
            tuple(retry_delays) if retry_delays is not None else None,
        )

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._subscriptions.values())

    def __len__(self) -> int:
        return len(self._subscriptions)

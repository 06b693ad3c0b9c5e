"""Test-only event types, in their own catalog so they never leak into the contracts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from switchyard.envelope import EventCatalog
from switchyard.testing import service_bus

TEST_CATALOG = EventCatalog()


@TEST_CATALOG.register("test.thing.happened")
class ThingHappened(BaseModel):
    """Something happened to a thing."""

    model_config = ConfigDict(extra="forbid")
    thing_id: str
    amount: int = 0


@TEST_CATALOG.register("test.thing.happened", version=2)
class ThingHappenedV2(BaseModel):
    """Something happened to a thing (v2 adds a reason)."""

    model_config = ConfigDict(extra="forbid")
    thing_id: str
    reason: str


import asyncio  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from switchyard.bus import Bus, Consumer, Subscription  # noqa: E402
from switchyard.bus.inbox import Inbox  # noqa: E402
from switchyard.envelope import Envelope, Event, new_envelope  # noqa: E402


def thing(thing_id: str = "t1", amount: int = 0) -> Envelope:
    """A ``test.thing.happened`` envelope from service ``svc``."""
    return new_envelope(
        ThingHappened(thing_id=thing_id, amount=amount), service="svc", catalog=TEST_CATALOG
    )


def make_bus(
    overrides: dict[str, Any], *, url: str | None = None, service: str = "svc", retry_delays=None
) -> Bus:
    """The shared tests' bus: a patient publisher (the broker is shared with other tests)."""
    return service_bus(
        overrides,
        service=service,
        url=url,
        retry_delays=retry_delays or overrides["bus_retry_delays"],
        publish_timeout=15.0,
    )


class Recorder:
    """A handler that records what it received and can be told to fail."""

    def __init__(self, fail_times: int = 0, always_fail: bool = False) -> None:
        self.events: list[Event[Any]] = []
        self.times: list[float] = []
        self.fail_times = fail_times
        self.always_fail = always_fail
        self.arrived = asyncio.Condition()

    async def __call__(self, event: Event[Any]) -> None:
        self.times.append(time.monotonic())
        self.events.append(event)
        async with self.arrived:
            self.arrived.notify_all()
        if self.always_fail or len(self.events) <= self.fail_times:
            raise RuntimeError(f"induced failure on delivery {len(self.events)}")

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` events arrived (30 s at most: a broker round trip on a loaded
        machine can take seconds; an idle one returns at once)."""

        async def enough() -> None:
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.events) >= count)

        await asyncio.wait_for(enough(), timeout)


async def start_consumer(
    bus: Bus,
    name: str,
    patterns: tuple[str, ...],
    handler: Callable[[Event[Any]], Awaitable[None]],
    *,
    inbox: Inbox | None = None,
) -> Consumer:
    consumer = Consumer(
        bus, Subscription(name, patterns, handler), inbox=inbox, catalog=TEST_CATALOG
    )
    await consumer.start()
    return consumer

"""Waiting in tests: poll for a condition instead of sleeping a fixed time (a loaded
machine is slow, an idle one should not wait for nothing), and a bus that plays another
service (publishing its events into a test's own namespace)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from switchyard.bus import Bus
from switchyard.metrics import Metrics


async def eventually(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Return once ``await predicate()`` is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def service_bus(
    overrides: Mapping[str, Any], service: str = "auth", *, url: str | None = None, **options: Any
) -> Bus:
    """A bus as ``service`` on the exchange, queue prefix, retry tiers and queue expiry of
    ``settings_overrides`` (connect it); ``options`` override other ``Bus`` arguments
    (``retry_delays=…``, ``publish_timeout=…``), ``url`` the broker (a proxy in front of it)."""
    arguments: dict[str, Any] = {
        "retry_delays": overrides["bus_retry_delays"],
        "queue_expires_ms": overrides["bus_queue_expires_ms"],
        "queue_type": overrides.get("bus_queue_type", "quorum"),
        **options,
    }
    return Bus(
        url=url or overrides["amqp_url"],
        exchange=overrides["bus_exchange"],
        service=service,
        metrics=Metrics(service),
        queue_prefix=overrides["bus_queue_prefix"],
        **arguments,
    )

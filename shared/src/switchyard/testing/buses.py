"""A bus for a test: the test's own exchange and queue prefix (``settings_overrides``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchyard.bus import Bus
from switchyard.metrics import Metrics


def bus_for_test(
    overrides: Mapping[str, Any], *, service: str = "svc", url: str | None = None, **options: Any
) -> Bus:
    """A :class:`~switchyard.bus.Bus` as ``service`` on the exchange, queue prefix, retry
    tiers and queue expiry of ``settings_overrides``, with its own metrics; ``options``
    override the other ``Bus`` arguments (``publish_timeout=…``, ``retry_delays=…``)."""
    arguments: dict[str, Any] = {
        "retry_delays": overrides["bus_retry_delays"],
        "queue_expires_ms": overrides["bus_queue_expires_ms"],
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

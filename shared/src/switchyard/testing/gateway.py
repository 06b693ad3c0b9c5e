"""A real gateway in front of a service, for tests and benchmarks.

- :func:`raised_limits_table` / :func:`raised_limits_routes`: the shipped route table with
  every quota raised: each route, policy and breaker as shipped, every request still checked
  and counted, nothing refused by policy (the limits are the gateway's own tests' subject);
- :func:`gateway_namespace`: the settings that put the gateway on a test's broker namespace
  (``settings_overrides``), where it follows that test's session revocations.

``gateway_svc`` is imported when called: the library does not depend on the service.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

NAMESPACE_SETTINGS = (
    "amqp_url",
    "bus_exchange",
    "bus_queue_prefix",
    "bus_queue_expires_ms",
    "bus_queue_type",
    "internal_api_token",
)


def raised_limits_table(limit: int = 1_000_000) -> dict[str, Any]:
    """The shipped route table with every rate limit raised to ``limit``."""
    from gateway_svc.settings import DEFAULT_ROUTES_FILE

    table: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTES_FILE.read_text())
    for policy in table["rate_limits"].values():
        policy["limit"] = limit
    return table


def raised_limits_routes(directory: Path, limit: int = 1_000_000) -> Path:
    """:func:`raised_limits_table` written to a new file in ``directory``; its path."""
    routes = directory / f"routes-{uuid.uuid4().hex[:8]}.yaml"
    routes.write_text(yaml.safe_dump(raised_limits_table(limit)))
    return routes


def gateway_namespace(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway settings naming the test's broker, exchange, queues and internal token."""
    return {name: overrides[name] for name in NAMESPACE_SETTINGS}

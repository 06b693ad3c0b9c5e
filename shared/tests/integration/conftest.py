"""Fixtures of the shared integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchyard.bus import Bus

from ..support import make_bus


@pytest.fixture
async def bus(settings_overrides: dict[str, Any]) -> AsyncIterator[Bus]:
    """A connected bus in the test's own namespace (service ``svc``)."""
    bus = make_bus(settings_overrides)
    await bus.connect()
    yield bus
    await bus.close()

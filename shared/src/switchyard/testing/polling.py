"""Waiting in tests for something that happens in the background (a relay, a consumer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Until ``predicate()`` is true, looking every ``interval`` seconds; an AssertionError
    after ``timeout`` seconds (generous: the machine running the tests may be busy)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        await asyncio.sleep(interval)

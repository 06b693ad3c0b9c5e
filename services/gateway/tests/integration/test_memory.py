"""A 50 MB upload streams through the gateway: its memory must not grow with the body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from .conftest import Upstream, route_table

UPLOAD_BYTES = 50 * 1024 * 1024
MAX_GROWTH = 10 * 1024 * 1024  # well under the 50 MB that buffering would cost


async def test_50mb_streamed_upload_keeps_gateway_memory_bounded(
    upstream: Upstream, gateway_process: object
) -> None:
    process = gateway_process(route_table(upstream.url))  # type: ignore[operator]
    await process.wait_ready()
    async with aiohttp.ClientSession() as session:
        async with session.post(process.url + "/upload/warm", data=b"w" * 1_000_000) as response:
            assert response.status == 200
    baseline = process.rss_bytes()
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.rss_bytes())
            await asyncio.sleep(0.02)

    async def body() -> AsyncIterator[bytes]:
        block = b"u" * (256 * 1024)
        for _ in range(UPLOAD_BYTES // len(block)):
            yield block

    sampler = asyncio.create_task(sample())
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(process.url + "/upload/big", data=body()) as response:
                assert response.status == 200
                seen = await response.json()
    finally:
        done.set()
        await sampler
    assert seen["body_bytes"] == UPLOAD_BYTES
    growth = peak - baseline
    assert growth < MAX_GROWTH, f"gateway RSS grew by {growth / 1e6:.1f} MB during a 50 MB upload"

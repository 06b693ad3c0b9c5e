"""The service as a real process: memory stays flat during a 50 MiB upload through the
gateway, and a process killed mid-upload leaves nothing after the sweep. Both backends."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from file_svc.settings import FileSettings
from switchyard.testing import JwksServer, eventually

from ..conftest import Stack, leftovers, rss_bytes, start_gateway, stored_objects
from ..support import (
    MIB,
    MultipartBody,
    ServiceProcess,
    file_part,
    generated,
    generated_bytes,
    purpose_part,
)

pytestmark = pytest.mark.integration

UPLOAD_BYTES = 50 * MIB
# Buffering the upload would cost 50 MiB; streaming costs a few chunks (S3: two 5 MiB parts).
MAX_RSS_GROWTH = 32 * MIB


@pytest.fixture
def service_process(tmp_path: Path) -> Any:
    started: list[ServiceProcess] = []

    def start(settings: FileSettings) -> ServiceProcess:
        process = ServiceProcess(settings, tmp_path / f"file-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def test_50_mib_round_trip_through_the_gateway_with_flat_memory(
    file_settings: Callable[..., FileSettings],
    service_process: Callable[[FileSettings], ServiceProcess],
    jwks_server: JwksServer,
    broker_cleanup: None,
) -> None:
    process = service_process(file_settings(max_bytes=64 * MIB))
    await process.wait_ready()
    gateway = await start_gateway(process.url, jwks_server)
    token = jwks_server.token("u-ada", ["customer"])
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:

            async def upload(size: int) -> dict[str, Any]:
                body = MultipartBody(
                    [purpose_part("attachment"), file_part(generated(size), "big.pdf")]
                )
                async with http.post(
                    gateway.url + "/api/v1/files",
                    data=body.stream(),
                    headers={**headers, "Content-Type": body.content_type},
                ) as response:
                    assert response.status == 201, await response.text()
                    return dict(await response.json())

            await upload(2 * MIB)  # warm up: first-use allocations are not growth
            baseline = peak = rss_bytes(process.pid)
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_bytes(process.pid))
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            try:
                meta = await upload(UPLOAD_BYTES)
            finally:
                done.set()
                await sampler
            expected = hashlib.sha256(generated_bytes(UPLOAD_BYTES)).hexdigest()
            assert meta["size"] == UPLOAD_BYTES and meta["sha256"] == expected
            growth = peak - baseline
            assert growth < MAX_RSS_GROWTH, (
                f"RSS grew {growth / MIB:.1f} MiB during a 50 MiB upload"
            )

            digest = hashlib.sha256()
            async with http.get(
                gateway.url + f"/api/v1/files/{meta['id']}/content", headers=headers
            ) as response:
                assert response.status == 200
                async for chunk in response.content.iter_chunked(MIB):
                    digest.update(chunk)
            assert digest.hexdigest() == expected
    finally:
        await gateway.stop(grace=0.5)


async def test_a_process_killed_mid_upload_leaves_nothing_after_the_sweep(
    file_settings: Callable[..., FileSettings],
    service_process: Callable[[FileSettings], ServiceProcess],
    start_stack: Callable[..., Any],
) -> None:
    timing = {"upload_heartbeat": 0.25, "orphan_grace": 1.0}
    process = service_process(file_settings(**timing))
    await process.wait_ready()
    stack: Stack = await start_stack(**timing)  # the survivor: same store and storage
    token = stack.token("u-ada")

    total = 20 * MIB
    body = MultipartBody([purpose_part("attachment"), file_part(generated(total), "big.pdf")])
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
    writer.write(
        (
            "POST /api/v1/files HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {body.content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    sent = 0
    stream: AsyncIterator[bytes] = body.stream()
    async for chunk in stream:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        sent += len(chunk)
        if sent > 12 * MIB:
            break  # two S3 parts or 12 MiB on disk are written by now, the rest never comes

    async def partial_written() -> bool:
        left = await leftovers(stack.deps)
        return left["uploading"] == 1 and len(left["temporaries"]) == 1

    await eventually(partial_written)
    process.kill()  # SIGKILL: no clean-up code runs
    writer.transport.abort()

    await asyncio.sleep(1.2)  # past the grace period
    report = await stack.sweep()
    assert report.abandoned == 1 and report.temporaries == 1
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}
    assert await stored_objects(stack.deps) == set()
    assert await stack.deps.usage.used("u-ada") == 0
    # The survivor still works on the same storage.
    assert (await stack.api.upload(b"after\n", "after.txt", token=token)).status == 201

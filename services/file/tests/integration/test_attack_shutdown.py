"""SIGTERM of the real file process (``python -m file_svc``) in the middle of a burst of
thumbnail requests through the gateway: whatever the moment the signal lands, no client gets
a 200 with a broken image, nothing is left in the spool, every thumbnail kept in storage is a
whole WebP, and the next process serves every thumbnail."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from file_svc.app import create_app
from file_svc.settings import FileSettings
from switchyard.testing import AppServer, JwksServer

from ..conftest import start_gateway
from ..support import FileApi, ServiceProcess, png

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend", ["local"])]

IMAGES = 3
SIZES = (256, 1024)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[FileSettings], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(settings: FileSettings) -> ServiceProcess:
        process = ServiceProcess(settings, tmp_path / f"file-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def webp_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        image.load()  # a truncated file fails here
        return image.size


def on_disk(settings: FileSettings) -> tuple[list[str], list[bytes]]:
    """What the stopped process left: the spool's files, the thumbnails kept in storage."""
    spool = Path(settings.spool_dir)
    spooled = [path.name for path in spool.iterdir()] if spool.exists() else []
    thumbs = Path(settings.storage) / "thumbs"
    kept = [p.read_bytes() for p in thumbs.rglob("*") if p.is_file()] if thumbs.exists() else []
    return spooled, kept


async def thumbnail(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, bytes]:
    try:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.read()
    except aiohttp.ClientError:
        return 0, b""  # the connection dropped: allowed, the client asks again


# Generous: every thumbnail in flight is finished; tiny: they are cut off mid-way.
@pytest.mark.parametrize("shutdown_timeout", [20.0, 0.05])
async def test_sigterm_during_a_thumbnail_burst_loses_and_leaves_nothing(
    shutdown_timeout: float,
    file_settings: Callable[..., FileSettings],
    processes: Callable[[FileSettings], ServiceProcess],
    http: aiohttp.ClientSession,
    jwks_server: JwksServer,
    broker_cleanup: None,
) -> None:
    settings = file_settings(shutdown_timeout=shutdown_timeout)
    process = processes(settings)
    await process.wait_ready()
    gateway = await start_gateway(process.url, jwks_server)
    token = jwks_server.token("u-ada", ["customer"])
    try:
        api = FileApi(http, gateway.url)
        ids = []
        for n in range(IMAGES):
            reply = await api.upload(png(1600 + n, 1200, color="blue"), f"p{n}.png", token=token)
            assert reply.status == 201, reply.body
            ids.append(reply.json()["id"])
        urls = [
            f"{gateway.url}/api/v1/files/{file_id}/thumbnail?size={size}"
            for file_id in ids
            for size in SIZES
        ]
        burst = [asyncio.create_task(thumbnail(http, url, token)) for url in urls]
        await asyncio.sleep(0.05)  # some reach the process, some may not: both are fine
        process.process.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*burst)
        exit_code = await asyncio.to_thread(process.process.wait, 60)
    finally:
        await gateway.stop(grace=0.5)
    assert exit_code == 0, process.log_path.read_text()[-3000:]
    for status, body in replies:
        assert status in (0, 200, 502, 503, 504), (status, body[:200])
        if status == 200:
            assert max(webp_size(body)) in SIZES
    spooled, kept = on_disk(settings)
    assert spooled == []
    for data in kept:
        assert max(webp_size(data)) in SIZES

    # The next service on the same store and storage (in this process: a second child
    # process would double the test's time) serves every one.
    again = await AppServer(create_app(settings)).start()
    try:
        for file_id in ids:
            for size in SIZES:
                reply = await FileApi(http, again.url).request(
                    "GET", f"/api/v1/files/{file_id}/thumbnail?size={size}", token=token
                )
                assert reply.status == 200, reply.body
                assert max(webp_size(reply.body)) == size
    finally:
        await again.stop()

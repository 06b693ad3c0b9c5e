"""Stopping the service while a thumbnail is being made whose requester has gone away: the
shared work is waited for (up to SHUTDOWN_TIMEOUT) before storage and the image pool
close, and past that cancelled cleanly (nothing stored, no spool copy left), so the next
request makes it. Real store, broker, storage and image pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import pytest

from file_svc import handlers, keys
from file_svc.app import create_app
from file_svc.deps import FileDeps
from file_svc.domain.files import StoredFile, thumbnail_key
from file_svc.settings import FileSettings
from switchyard.testing import AppServer, JwksServer, eventually

from ..conftest import stored_objects
from ..support import FileApi, png

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend", ["local"])]

SIZE = 256


async def started(settings: FileSettings) -> tuple[AppServer, FileDeps]:
    app = create_app(settings)
    server = await AppServer(app).start()
    return server, app[keys.DEPS]


async def uploaded_image(
    server: AppServer, deps: FileDeps, http: aiohttp.ClientSession, jwks_server: JwksServer
) -> StoredFile:
    token = jwks_server.token("u-ada", ["customer"])
    reply = await FileApi(http, server.url).upload(png(800, 600), "pic.png", token=token)
    assert reply.status == 201, reply.body
    stored = await deps.records.get(reply.json()["id"])
    assert stored is not None
    return stored


def spool_files(deps: FileDeps) -> list[str]:
    directory = deps.spool.directory
    return [path.name for path in directory.iterdir()] if directory.exists() else []


async def occupy_image_pool(deps: FileDeps) -> Callable[[], None]:
    """Take every slot of the image pool, as other images' work would: a thumbnail asked for
    now stays in the making until the returned function gives the slots back."""
    slots = deps.images._slots
    for _ in range(deps.images.workers):
        await slots.acquire()

    def release() -> None:
        for _ in range(deps.images.workers):
            slots.release()

    return release


async def abandoned_thumbnail(stored: StoredFile, deps: FileDeps) -> asyncio.Task[bytes]:
    """A thumbnail request that starts the work and goes away (the work goes on)."""
    key = thumbnail_key(stored.id, SIZE)
    requester = asyncio.create_task(handlers.thumbnail(stored, SIZE, deps=deps))

    async def in_the_making() -> bool:
        return key in deps.thumbnail_work

    await eventually(in_the_making)
    work = deps.thumbnail_work[key]
    requester.cancel()
    await asyncio.gather(requester, return_exceptions=True)
    assert not work.done()
    return work


async def test_shutdown_waits_for_a_thumbnail_being_made(
    file_settings: Callable[..., FileSettings],
    http: aiohttp.ClientSession,
    jwks_server: JwksServer,
    broker_cleanup: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="file.handlers")
    # Generous: the bound is never reached, the thumbnail is let go as soon as the wait begins.
    server, deps = await started(file_settings(shutdown_timeout=60))
    stored = await uploaded_image(server, deps, http, jwks_server)
    release = await occupy_image_pool(deps)
    work = await abandoned_thumbnail(stored, deps)

    stopping = asyncio.create_task(server.stop())

    async def waiting() -> bool:
        return any(
            r.getMessage() == "waiting for the thumbnails being made" for r in caplog.records
        )

    await eventually(waiting)
    assert not stopping.done()
    release()
    await stopping
    assert work.done() and not work.cancelled() and work.exception() is None
    assert thumbnail_key(stored.id, SIZE) in await stored_objects(deps)
    assert spool_files(deps) == []
    assert deps.thumbnail_work == {}


async def test_thumbnails_past_the_shutdown_timeout_are_cancelled_and_made_again_later(
    file_settings: Callable[..., FileSettings],
    http: aiohttp.ClientSession,
    jwks_server: JwksServer,
    broker_cleanup: None,
) -> None:
    settings = file_settings(shutdown_timeout=0.2)
    server, deps = await started(settings)
    stored = await uploaded_image(server, deps, http, jwks_server)
    release = await occupy_image_pool(deps)
    work = await abandoned_thumbnail(stored, deps)

    await server.stop()
    release()
    assert work.cancelled()  # not left pending on a closed pool and storage
    key = thumbnail_key(stored.id, SIZE)
    assert key not in await stored_objects(deps)
    assert spool_files(deps) == []

    # Recoverable: the next process on the same storage makes it on the first request.
    again, _ = await started(settings)
    try:
        token = jwks_server.token("u-ada", ["customer"])
        reply = await FileApi(http, again.url).request(
            "GET", f"/api/v1/files/{stored.id}/thumbnail?size={SIZE}", token=token
        )
        assert reply.status == 200, reply.body
        assert reply.headers["Content-Type"] == "image/webp"
    finally:
        await again.stop()


async def test_a_requester_still_waiting_spends_the_same_shutdown_budget(
    file_settings: Callable[..., FileSettings],
    http: aiohttp.ClientSession,
    jwks_server: JwksServer,
    broker_cleanup: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGTERM while a client still waits for a thumbnail: aiohttp first drains the request
    for up to SHUTDOWN_TIMEOUT (the runner's own, as ``run`` sets it), then cancels it. The
    thumbnail wait that follows has only what is left of that one budget — not a second
    SHUTDOWN_TIMEOUT, which would let the process run up to twice the time it advertises
    (and be killed mid-write by a supervisor's grace period). The pool stays occupied, so
    the drain uses the whole budget and nothing is left for the thumbnail wait."""
    caplog.set_level(logging.INFO, logger="file.handlers")
    settings = file_settings(shutdown_timeout=0.5)
    app = create_app(settings)
    server = await AppServer(app, shutdown_timeout=settings.shutdown_timeout).start()
    deps = app[keys.DEPS]
    stored = await uploaded_image(server, deps, http, jwks_server)
    release = await occupy_image_pool(deps)
    key = thumbnail_key(stored.id, SIZE)
    token = jwks_server.token("u-ada", ["customer"])
    requester = asyncio.create_task(
        FileApi(http, server.url).request(
            "GET", f"/api/v1/files/{stored.id}/thumbnail?size={SIZE}", token=token
        )
    )

    async def in_the_making() -> bool:
        return key in deps.thumbnail_work

    await eventually(in_the_making)
    work = deps.thumbnail_work[key]
    try:
        await server.stop()
    finally:
        release()
    outcome = await asyncio.gather(requester, return_exceptions=True)
    assert isinstance(outcome[0], aiohttp.ClientError), outcome  # dropped at the drain's end
    assert work.cancelled()
    waits = [r for r in caplog.records if r.getMessage() == "waiting for the thumbnails being made"]
    assert len(waits) == 1
    assert getattr(waits[0], "timeout", None) == 0, vars(waits[0])
    assert key not in await stored_objects(deps)
    assert spool_files(deps) == []

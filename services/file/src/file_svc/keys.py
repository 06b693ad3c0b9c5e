"""Every web.AppKey of the file service."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from file_svc.deps import FileDeps
from file_svc.metrics import FileMetrics
from file_svc.sweeper import Sweeper

DEPS = web.AppKey("file.deps", FileDeps)
FILE_METRICS = web.AppKey("file.metrics", FileMetrics)
SWEEPER = web.AppKey("file.sweeper", Sweeper)


@dataclass
class ShutdownClock:
    """The event loop's time when shutdown began (aiohttp's on_shutdown, before it drains
    the requests in flight): every wait at shutdown shares one SHUTDOWN_TIMEOUT from there.
    Set in place: a started application's state is not assigned to."""

    began: float | None = None


SHUTDOWN_CLOCK = web.AppKey("file.shutdown_clock", ShutdownClock)

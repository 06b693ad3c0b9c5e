"""Every web.AppKey of the file service."""

from __future__ import annotations

from aiohttp import web

from file_svc.deps import FileDeps
from file_svc.metrics import FileMetrics
from file_svc.sweeper import Sweeper

DEPS = web.AppKey("file.deps", FileDeps)
FILE_METRICS = web.AppKey("file.metrics", FileMetrics)
SWEEPER = web.AppKey("file.sweeper", Sweeper)
# The event loop's time when shutdown began (aiohttp's on_shutdown, before it drains the
# requests in flight): every wait at shutdown shares one SHUTDOWN_TIMEOUT from there.
SHUTDOWN_BEGAN = web.AppKey("file.shutdown_began", float)

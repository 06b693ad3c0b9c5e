"""Every web.AppKey of the file service."""

from __future__ import annotations

from aiohttp import web

from file_svc.deps import FileDeps
from file_svc.metrics import FileMetrics
from file_svc.sweeper import Sweeper

DEPS = web.AppKey("file.deps", FileDeps)
FILE_METRICS = web.AppKey("file.metrics", FileMetrics)
SWEEPER = web.AppKey("file.sweeper", Sweeper)

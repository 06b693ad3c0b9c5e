"""Every ``web.AppKey`` of the auth service."""

from __future__ import annotations

from aiohttp import web

from auth_svc.adapters.signing_keys import KeyRing
from auth_svc.domain.clock import Clock
from auth_svc.handlers import Deps
from auth_svc.metrics import AuthMetrics

DEPS = web.AppKey("auth.deps", Deps)
KEY_RING = web.AppKey("auth.key_ring", KeyRing)
CLOCK = web.AppKey("auth.clock", Clock)
AUTH_METRICS = web.AppKey("auth.metrics", AuthMetrics)

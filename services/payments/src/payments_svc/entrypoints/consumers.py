"""Bus subscriptions: one queue, ``payments.users``, for auth's user events (the directory
read model with roles; wallets opened at sign-up, frozen at deletion)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from payments_svc import keys
from payments_svc.handlers.users import USER_EVENT_HANDLERS, handle_user_event
from switchyard.bus import HandlerRegistry
from switchyard.envelope import CATALOG

USER_EVENT_TYPES = CATALOG.types_of(USER_EVENT_HANDLERS)


def build_registry(app: web.Application) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.add("users", USER_EVENT_TYPES, partial(handle_user_event, books=app[keys.BOOKS]))
    return registry

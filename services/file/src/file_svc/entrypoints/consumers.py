"""Bus subscriptions, one quorum queue per concern (``file.<name>``, each with its retry
tiers and DLQ): ``users`` follows auth's user events (the directory, and deleting the
files of a deleted account), ``attachments`` follows chat messages (who may read an
attached file)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from file_svc import keys
from file_svc.handlers import CHAT_EVENT_HANDLERS, handle_chat_event, handle_user_event
from switchyard.bus import HandlerRegistry
from switchyard.directory import USER_EVENTS
from switchyard.envelope import CATALOG

USER_EVENT_TYPES = CATALOG.types_of(USER_EVENTS)
CHAT_EVENT_TYPES = CATALOG.types_of(CHAT_EVENT_HANDLERS)


def build_registry(app: web.Application) -> HandlerRegistry:
    deps = app[keys.DEPS]
    registry = HandlerRegistry()
    registry.add("users", USER_EVENT_TYPES, partial(handle_user_event, deps=deps))
    registry.add("attachments", CHAT_EVENT_TYPES, partial(handle_chat_event, deps=deps))
    return registry

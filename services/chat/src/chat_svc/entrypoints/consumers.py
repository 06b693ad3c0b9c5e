"""Bus subscriptions, one quorum queue per concern (``chat.<name>``): ``users`` follows
auth's user events (the directory; deleted accounts), ``files`` follows uploads and
deletions (which files may be attached)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from chat_svc import keys
from chat_svc.handlers.events import FILE_EVENTS, handle_file_event, handle_user_event
from switchyard.bus import HandlerRegistry
from switchyard.directory import USER_EVENTS
from switchyard.envelope import CATALOG

USER_EVENT_TYPES = CATALOG.types_of(USER_EVENTS)
FILE_EVENT_TYPES = CATALOG.types_of(FILE_EVENTS)


def build_registry(app: web.Application) -> HandlerRegistry:
    chat = app[keys.CHAT]
    registry = HandlerRegistry()
    registry.add("users", USER_EVENT_TYPES, partial(handle_user_event, chat=chat))
    registry.add("files", FILE_EVENT_TYPES, partial(handle_file_event, chat=chat))
    return registry

"""The dependencies every chat command gets, resolved once in ``app.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chat_svc.adapters.attachments import Attachments
from chat_svc.adapters.presence import Presence
from chat_svc.adapters.store import ChatStore
from chat_svc.handlers.ports import Realtime
from chat_svc.metrics import ChatMetrics
from chat_svc.settings import ChatSettings
from switchyard.directory import UserDirectory


@dataclass
class Chat:
    store: ChatStore
    attachments: Attachments
    presence: Presence
    directory: UserDirectory
    realtime: Realtime
    metrics: ChatMetrics
    settings: ChatSettings
    published: Callable[[], None]  # wakes the outbox relay after a write with events


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def conversation_room(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"

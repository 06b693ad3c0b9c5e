"""Events the chat service consumes: auth's users (the directory; a deleted account leaves
every conversation and is disconnected) and the file service's uploads (attachments)."""

from __future__ import annotations

from typing import Any

from chat_svc.handlers.common import Chat
from chat_svc.handlers.conversations import leave
from switchyard.bus import PermanentError
from switchyard.directory import USER_EVENTS, apply_user_event
from switchyard.envelope import Event
from switchyard.events.auth import UserDeleted
from switchyard.events.file import FileDeleted, FileUploaded

FILE_EVENTS = (FileUploaded, FileDeleted)


async def handle_user_event(event: Event[Any], *, chat: Chat) -> None:
    if not isinstance(event.data, USER_EVENTS):
        raise PermanentError(f"chat does not follow {event.type}")
    await apply_user_event(chat.directory, event.data)
    if isinstance(event.data, UserDeleted):
        await account_deleted(chat, event.data.user_id)


async def account_deleted(chat: Chat, user_id: str) -> None:
    """The user leaves every conversation and every socket of theirs is closed (the
    directory's tombstone refuses their next connect). Idempotent: a redelivery finds
    nothing left to do."""
    for conversation_id in await chat.store.conversations_of(user_id):
        await leave(chat, conversation_id, user_id)
    # Sockets on other replicas are closed through the fan-out exchange; each replica's
    # disconnect handler then records the user offline.
    await chat.realtime.disconnect(await chat.presence.sids_of(user_id))


async def handle_file_event(event: Event[Any], *, chat: Chat) -> None:
    data = event.data
    if isinstance(data, FileUploaded):
        await chat.attachments.uploaded(data.file_id, data.owner_id, data.content_type, data.size)
    elif isinstance(data, FileDeleted):
        await chat.attachments.deleted(data.file_id, data.owner_id)
    else:
        raise PermanentError(f"chat does not follow {event.type}")

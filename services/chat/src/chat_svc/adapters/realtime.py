"""The ``Realtime`` port on python-socketio: emits reach sockets on every replica through
the fan-out manager (``adapters/fanout.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import socketio

from chat_svc.handlers.common import conversation_room, user_room


class SocketRealtime:
    def __init__(self, server: socketio.AsyncServer) -> None:
        self.server = server

    async def to_users(
        self,
        event: str,
        data: dict[str, Any],
        user_ids: Iterable[str],
        *,
        skip_sid: str | None = None,
    ) -> None:
        rooms = [user_room(user_id) for user_id in dict.fromkeys(user_ids)]
        if rooms:  # one publish, whatever the number of members
            await self.server.emit(event, data, to=rooms, skip_sid=skip_sid)

    async def to_conversation(
        self,
        event: str,
        data: dict[str, Any],
        conversation_id: str,
        *,
        skip_sid: str | None = None,
    ) -> None:
        await self.server.emit(
            event, data, room=conversation_room(conversation_id), skip_sid=skip_sid
        )

    async def disconnect(self, sids: Iterable[str]) -> None:
        for sid in sids:
            await self.server.disconnect(sid)

    async def leave_conversation(self, sids: Iterable[str], conversation_id: str) -> None:
        for sid in sids:
            await self.server.leave_room(sid, conversation_room(conversation_id))

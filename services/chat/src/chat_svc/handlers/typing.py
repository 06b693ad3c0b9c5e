"""Typing indicators: ephemeral (never stored), throttled per user and conversation (at most
one "typing" forwarded per ``throttle`` seconds), ended on their own when not refreshed
within ``expiry`` seconds. State is per replica: a user typing from sockets on two replicas
is throttled on each."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from chat_svc.handlers.ports import Realtime


@dataclass
class _State:
    forwarded: float
    sid: str
    expiry: asyncio.TimerHandle | None = field(default=None)


class TypingRelay:
    def __init__(self, realtime: Realtime, *, throttle: float, expiry: float) -> None:
        self.realtime = realtime
        self.throttle = throttle
        self.expiry = expiry
        self._states: dict[tuple[str, str], _State] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def update(self, user_id: str, conversation_id: str, is_typing: bool, sid: str) -> None:
        key = (user_id, conversation_id)
        state = self._states.get(key)
        if not is_typing:
            if state is None:
                return
            self._end(key)
            await self._emit(user_id, conversation_id, False, sid)
            return
        now = time.monotonic()
        forward = state is None or now - state.forwarded >= self.throttle
        if state is None:
            state = self._states[key] = _State(forwarded=now, sid=sid)
        elif forward:
            state.forwarded = now
        state.sid = sid
        if state.expiry is not None:
            state.expiry.cancel()
        state.expiry = asyncio.get_running_loop().call_later(self.expiry, self._expire, key)
        if forward:
            await self._emit(user_id, conversation_id, True, sid)

    def forget_socket(self, sid: str) -> None:
        """A socket went away: its typing states end (and are announced as ended)."""
        for key, state in list(self._states.items()):
            if state.sid == sid:
                self._expire(key)

    def _end(self, key: tuple[str, str]) -> _State | None:
        state = self._states.pop(key, None)
        if state is not None and state.expiry is not None:
            state.expiry.cancel()
        return state

    def _expire(self, key: tuple[str, str]) -> None:
        state = self._end(key)
        if state is None:
            return
        task = asyncio.create_task(self._emit(key[0], key[1], False, state.sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, user_id: str, conversation_id: str, is_typing: bool, sid: str) -> None:
        await self.realtime.to_conversation(
            "typing",
            {"conversation_id": conversation_id, "user_id": user_id, "is_typing": is_typing},
            conversation_id,
            skip_sid=sid,
        )

    async def close(self) -> None:
        for key in list(self._states):
            self._end(key)
        for task in list(self._tasks):
            task.cancel()

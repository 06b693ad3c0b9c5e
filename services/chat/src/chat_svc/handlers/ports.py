"""What the handlers need from the outside, as small interfaces."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class Realtime(Protocol):
    """Emits to sockets, on whichever replica they are connected."""

    async def to_users(
        self,
        event: str,
        data: dict[str, Any],
        user_ids: Iterable[str],
        *,
        skip_sid: str | None = None,
    ) -> None: ...

    async def to_conversation(
        self, event: str, data: dict[str, Any], conversation_id: str, *, skip_sid: str | None = None
    ) -> None: ...

    async def disconnect(self, sids: Iterable[str]) -> None: ...

    async def leave_conversation(self, sids: Iterable[str], conversation_id: str) -> None: ...

"""Delivery acks, coalesced: a client acks every ``message`` it gets, so a busy group would
otherwise cost one store write and one receipt per member per message. Acks for the same
(conversation, recipient) arriving within ``window`` seconds become one write of the highest
seq and one ``receipt`` to the senders involved."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from chat_svc.handlers import messages
from chat_svc.handlers.common import Chat
from switchyard.envelope import utcnow

log = logging.getLogger("chat.receipts")


@dataclass
class _Pending:
    seq: int
    senders: set[str] = field(default_factory=set)


class DeliveryBatcher:
    def __init__(self, chat: Chat, *, window: float) -> None:
        self.chat = chat
        self.window = window
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def acked(
        self, conversation_id: str, recipient: str, seq: int, sender: str, sent_at: datetime | None
    ) -> None:
        if sent_at is not None:
            self.chat.metrics.delivered_after((utcnow() - sent_at).total_seconds())
        key = (conversation_id, recipient)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(seq)
            task = asyncio.create_task(self._flush_later(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        pending.seq = max(pending.seq, seq)
        pending.senders.add(sender)

    async def _flush_later(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(self.window)
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        try:
            await messages.delivered(
                chat=self.chat,
                user_id=key[1],
                conversation_id=key[0],
                seq=pending.seq,
                senders=sorted(pending.senders),
            )
        except Exception:
            # The recipient's next sync or mark_read moves the mark again; nothing is lost.
            log.exception("recording a delivery failed", extra={"seq": pending.seq})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

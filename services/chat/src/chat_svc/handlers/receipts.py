"""Delivery acks, batched: a client acks every ``message`` it gets, so a busy service would
otherwise cost one store write and one receipt per recipient per message. Acks arriving
within ``window`` seconds are written together: the highest seq per (conversation,
recipient), all of them in one bulk write, and one ``receipt`` per mark that moved to the
senders involved."""

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
        self._flush: asyncio.Task[None] | None = None
        self._writing: set[asyncio.Task[None]] = set()

    def acked(
        self, conversation_id: str, recipient: str, seq: int, sender: str, sent_at: datetime | None
    ) -> None:
        if sent_at is not None:
            self.chat.metrics.delivered_after((utcnow() - sent_at).total_seconds())
        key = (conversation_id, recipient)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(seq)
        pending.seq = max(pending.seq, seq)
        pending.senders.add(sender)
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window)
        # Acks arriving from here on start the next window while this one is written.
        batch, self._pending, self._flush = self._pending, {}, None
        if not batch:
            return
        task = asyncio.current_task()
        if task is not None:
            self._writing.add(task)
        try:
            await messages.delivered_many(
                chat=self.chat,
                marks=[
                    messages.DeliveredMark(cid, recipient, pending.seq, sorted(pending.senders))
                    for (cid, recipient), pending in batch.items()
                ],
            )
        except Exception:
            # The recipient's next sync or mark_read moves the mark again; nothing is lost.
            log.exception("recording deliveries failed", extra={"marks": len(batch)})
        finally:
            if task is not None:
                self._writing.discard(task)

    async def close(self) -> None:
        tasks = [t for t in (self._flush, *self._writing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Conversations and messages: ids, the rules a message body obeys, the client-facing shapes."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chat_svc.domain.errors import ChatError
from switchyard.envelope import format_time

Kind = Literal["direct", "group"]
MAX_BODY = 4000
PREVIEW = 140
MAX_ATTACHMENTS = 10
MAX_GROUP_MEMBERS = 500
# The sender of a void: a placeholder filling a seq that was reserved and never stored (a
# crashed sender, a racing resend), so the numbering has no gap. No user has this id
# (auth's ids are 32 hex digits); clients see a deleted message without a client_msg_id.
VOID_SENDER = "system"


def direct_conversation_id(a: str, b: str) -> str:
    """The one id of the direct conversation between two users, whoever creates it."""
    first, second = sorted((a, b))
    digest = hashlib.sha256(f"{first}\x00{second}".encode()).hexdigest()[:32]
    return f"d_{digest}"


def group_conversation_id() -> str:
    return f"g_{uuid.uuid4().hex}"


def new_message_id() -> str:
    return f"m_{uuid.uuid4().hex}"


def clean_body(body: str) -> str:
    """The stored body: trimmed, 1–4,000 characters."""
    text = body.strip()
    if not text:
        raise ChatError("empty-body", "A message needs a body (1 to 4,000 characters).")
    if len(text) > MAX_BODY:
        raise ChatError("body-too-long", f"A message body holds at most {MAX_BODY} characters.")
    return text


def preview(body: str) -> str:
    return body if len(body) <= PREVIEW else body[: PREVIEW - 1] + "…"


@dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    body: str
    attachments: list[str]
    client_msg_id: str | None
    created_at: datetime
    edited_at: datetime | None = None
    deleted: bool = False
    void: bool = False  # a placeholder (VOID_SENDER, deleted, no client_msg_id)

    def view(self, *, sender_deleted: bool = False) -> dict[str, Any]:
        """The message object of DESIGN §5 (plus ``sender_deleted`` for a closed account)."""
        shown: dict[str, Any] = {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "body": "" if self.deleted else self.body,
            "attachments": [] if self.deleted else list(self.attachments),
            "client_msg_id": self.client_msg_id,
            "created_at": format_time(self.created_at),
            "edited_at": format_time(self.edited_at) if self.edited_at else None,
            "deleted": self.deleted,
        }
        if sender_deleted:
            shown["sender_deleted"] = True
        return shown


@dataclass(frozen=True)
class Conversation:
    id: str
    kind: Kind
    title: str | None
    member_ids: list[str]
    admin_ids: list[str]
    created_by: str
    last_seq: int
    created_at: datetime
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def is_member(self, user_id: str) -> bool:
        return user_id in self.member_ids

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admin_ids

    def view(
        self,
        *,
        unread_count: int,
        last_read_seq: int = 0,
        last_message: Message | None = None,
        muted: bool = False,
    ) -> dict[str, Any]:
        """The conversation object of DESIGN §5, as one member sees it; ``unread_count`` is
        the other members' live messages after their read mark (``ChatStore.unread_count``)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "member_ids": list(self.member_ids),
            "admin_ids": list(self.admin_ids),
            "created_by": self.created_by,
            "created_at": format_time(self.created_at),
            "last_seq": self.last_seq,
            "last_message": last_message.view() if last_message else None,
            "unread_count": unread_count,
            "last_read_seq": last_read_seq,
            "muted": muted,
        }

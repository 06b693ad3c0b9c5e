"""Events the chat service publishes (through its outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard.envelope import event_type, examples

CONVERSATION_ID = "c_019c3a7e5b2f4d1e8a6b0c9d2e4f6a8b"
MESSAGE_ID = "m_019c3a80c1d24e6f9a1b3c5d7e9f0a2b"
ADA = "019c3a7e5b2f4d1e8a6b0c9d2e4f6a8b"
GRACE = "019c3a7f0e1d4c2b8a9f7e6d5c4b3a29"
FILE_ID = "f_019c3a81aa0b4c1d8e2f3a4b5c6d7e8f"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@event_type("chat.conversation.created")
class ConversationCreated(_Data):
    """A direct or group conversation was created; its members may now message it."""

    model_config = examples(
        {
            "conversation_id": CONVERSATION_ID,
            "kind": "direct",
            "member_ids": [ADA, GRACE],
            "created_by": ADA,
            "title": None,
            "created_at": "2026-03-01T12:00:00Z",
        }
    )

    conversation_id: str
    kind: Literal["direct", "group"]
    member_ids: list[str]
    created_by: str
    title: str | None = None
    created_at: datetime


@event_type("chat.message.sent")
class MessageSent(_Data):
    """A message was stored with the next ``seq`` of its conversation.

    ``offline_recipient_ids`` are the recipients with no connected socket at send
    time: the notification service pushes to them."""

    model_config = examples(
        {
            "message_id": MESSAGE_ID,
            "conversation_id": CONVERSATION_ID,
            "seq": 42,
            "sender_id": ADA,
            "recipient_ids": [GRACE],
            "offline_recipient_ids": [GRACE],
            "preview": "Are we still on for Thursday?",
            "attachment_ids": [FILE_ID],
            "sent_at": "2026-03-01T12:05:00Z",
        }
    )

    message_id: str
    conversation_id: str
    seq: int = Field(ge=1)
    sender_id: str
    recipient_ids: list[str]
    offline_recipient_ids: list[str]
    preview: str = Field(max_length=140)
    attachment_ids: list[str] = []
    sent_at: datetime


@event_type("chat.message.updated")
class MessageUpdated(_Data):
    """A sender edited their message (same ``seq``)."""

    model_config = examples(
        {
            "message_id": MESSAGE_ID,
            "conversation_id": CONVERSATION_ID,
            "seq": 42,
            "sender_id": ADA,
            "edited_at": "2026-03-01T12:06:00Z",
        }
    )

    message_id: str
    conversation_id: str
    seq: int = Field(ge=1)
    sender_id: str
    edited_at: datetime


@event_type("chat.message.deleted")
class MessageDeleted(_Data):
    """A sender deleted their message; it keeps its ``seq`` and loses its body."""

    model_config = examples(
        {
            "message_id": MESSAGE_ID,
            "conversation_id": CONVERSATION_ID,
            "seq": 42,
            "sender_id": ADA,
            "deleted_at": "2026-03-01T12:07:00Z",
        }
    )

    message_id: str
    conversation_id: str
    seq: int = Field(ge=1)
    sender_id: str
    deleted_at: datetime

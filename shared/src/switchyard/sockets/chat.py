"""The chat service's Socket.IO API (DESIGN §5 chat), at ``/socket.io/`` through the gateway.

Connect with ``auth: {token}`` (or ``Authorization: Bearer``); a refusal reaches the
client's ``connect_error`` as ``{"message": "unauthorized", "data": {"reason": ...}}``.
Every client event is acknowledged: the success ack below, or ``ErrorAck``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard.sockets.api import SocketApi, SocketEvent

MAX_SYNC_PAGE = 100
ConversationId = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
# A file id to attach (file's ids are ``f_`` + 32 hex digits): bounded per item so a send
# cannot carry 50 ids of 40,000 characters each into the store's lookup; the REST body
# (chat's SendBody) uses the same type.
AttachmentId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class _Payload(BaseModel):
    """Client payloads: strict JSON types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Shape(BaseModel):
    """What the server sends (documented; not validated on the way out)."""

    model_config = ConfigDict(extra="allow")


class JoinConversation(_Payload):
    conversation_id: str = ConversationId


class SendMessage(_Payload):
    conversation_id: str = ConversationId
    # Bounded here only against abuse; the 1–4,000 characters rule (after trimming) is the
    # service's, with its own error codes (empty-body, body-too-long).
    body: str = Field(max_length=40_000)
    client_msg_id: str = Field(min_length=1, max_length=128)
    attachments: list[AttachmentId] = Field(default_factory=list, max_length=50)


class Typing(_Payload):
    conversation_id: str = ConversationId
    is_typing: bool


class MarkRead(_Payload):
    conversation_id: str = ConversationId
    seq: int = Field(ge=1, le=2**62)


class Sync(_Payload):
    conversation_id: str = ConversationId
    after_seq: int = Field(ge=0, le=2**62)
    limit: int = Field(50, ge=1, le=MAX_SYNC_PAGE)


class Message(_Shape):
    id: str
    conversation_id: str
    seq: int
    sender_id: str = Field(
        description='"system" (no user has that id) for a void: a deleted placeholder '
        "filling a seq whose sender never stored it"
    )
    body: str
    attachments: list[str]
    client_msg_id: str | None = Field(description="null for a void")
    created_at: str
    edited_at: str | None = None
    deleted: bool = False
    sender_deleted: bool | None = None


class Joined(_Shape):
    conversation_id: str
    last_seq: int
    last_read_seq: int


class MessageAck(_Shape):
    message: Message


class EmptyAck(_Shape):
    pass


class ReadAck(_Shape):
    last_read_seq: int


class SyncAck(_Shape):
    messages: list[Message]
    has_more: bool


class ErrorDetail(_Shape):
    code: str
    message: str


class ErrorAck(_Shape):
    error: ErrorDetail


class MessageEvent(_Shape):
    message: Message


class TypingEvent(_Shape):
    conversation_id: str
    user_id: str
    is_typing: bool


class ReceiptEvent(_Shape):
    conversation_id: str
    user_id: str
    kind: Literal["delivered", "read"]
    seq: int


class PresenceEvent(_Shape):
    user_id: str
    online: bool
    last_seen: str | None


CHAT_SOCKET_API = SocketApi(
    service="chat",
    path="/socket.io/",
    description=(
        "Real-time chat over Socket.IO (Engine.IO v4, polling and WebSocket). Connect with "
        "`auth: {token}`; every client event is acknowledged with its ack or with "
        '`{"error": {"code", "message"}}` (the socket stays open).'
    ),
    events=(
        SocketEvent(
            "join_conversation",
            "client",
            JoinConversation,
            Joined,
            "Open a conversation: typing events of its room, and where to sync from.",
        ),
        SocketEvent(
            "send_message",
            "client",
            SendMessage,
            MessageAck,
            "Store the next message (same client_msg_id: the original, nothing new).",
        ),
        SocketEvent("typing", "client", Typing, EmptyAck, "Start or stop typing (ephemeral)."),
        SocketEvent(
            "mark_read", "client", MarkRead, ReadAck, "Read up to seq (never moves backwards)."
        ),
        SocketEvent(
            "sync",
            "client",
            Sync,
            SyncAck,
            "The messages after after_seq, in order, never skipping a seq; page with has_more.",
        ),
        SocketEvent(
            "message",
            "server",
            MessageEvent,
            None,
            "A new, edited or deleted message of one of the user's conversations; "
            "acknowledging it is the delivered receipt.",
        ),
        SocketEvent(
            "typing", "server", TypingEvent, None, "A member of a joined conversation types."
        ),
        SocketEvent(
            "receipt",
            "server",
            ReceiptEvent,
            None,
            "Delivered (to the sender) or read (to the other members) up to seq.",
        ),
        SocketEvent(
            "presence",
            "server",
            PresenceEvent,
            None,
            "A conversation peer came online or went offline.",
        ),
    ),
    error_ack=ErrorAck,
)

SOCKET_APIS = (CHAT_SOCKET_API,)

"""Messages: send (socket and REST share it), history, sync after reconnect, receipts,
edit and delete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from chat_svc.adapters.store import conversation_from
from chat_svc.domain.conversations import (
    MAX_ATTACHMENTS,
    Conversation,
    Message,
    clean_body,
    new_message_id,
    preview,
)
from chat_svc.domain.errors import ChatError, forbidden, not_found
from chat_svc.handlers.common import Chat
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.chat import MessageDeleted, MessageSent, MessageUpdated
from switchyard.mongo import stored_time

_SEND_TRIES = 5
MAX_PAGE = 100


@dataclass(frozen=True)
class Sent:
    message: Message
    created: bool  # False: a resend of a known client_msg_id


async def send_message(
    *,
    chat: Chat,
    user_id: str,
    conversation_id: str,
    body: str,
    client_msg_id: str,
    attachments: list[str],
    sid: str | None = None,
) -> Sent:
    """Store the next message of the conversation (``seq`` from the conversation's ``$inc``)
    with its ``chat.message.sent`` event, then fan it out to every member's sockets."""
    text = clean_body(body)
    if len(attachments) > MAX_ATTACHMENTS:
        raise ChatError("too-many-attachments", f"At most {MAX_ATTACHMENTS} attachments.")
    known = await chat.store.by_client_id(user_id, client_msg_id)
    if known is not None:
        if await chat.store.get_for_member(conversation_id, user_id) is None:
            raise not_found()
        return _resent(known, conversation_id)
    refused = await chat.attachments.unusable(user_id, attachments)
    if refused:
        raise ChatError(
            "unknown-attachment",
            f"These files cannot be attached (unknown, not yours, or deleted): {', '.join(refused)}.",
        )
    for _ in range(_SEND_TRIES):
        now = utcnow()
        reserved = await chat.store.reserve_seq(conversation_id, user_id, now)
        if reserved is None:
            raise not_found()
        conversation = conversation_from(reserved)
        seq = conversation.last_seq
        message = Message(
            id=new_message_id(),
            conversation_id=conversation_id,
            seq=seq,
            sender_id=user_id,
            body=text,
            attachments=list(dict.fromkeys(attachments)),
            client_msg_id=client_msg_id,
            created_at=now,
        )
        recipients = [uid for uid in conversation.member_ids if uid != user_id]
        online = await chat.presence.online_among(recipients)
        event = new_envelope(
            MessageSent(
                message_id=message.id,
                conversation_id=conversation_id,
                seq=seq,
                sender_id=user_id,
                recipient_ids=recipients,
                offline_recipient_ids=[uid for uid in recipients if uid not in online],
                preview=preview(text),
                attachment_ids=message.attachments,
                sent_at=now,
            ),
            service="chat",
            subject=conversation_id,
        )
        try:
            await chat.store.insert_message(_document(message), [event])
        except DuplicateKeyError:
            known = await chat.store.by_client_id(user_id, client_msg_id)
            if known is not None:
                # The same client_msg_id landed concurrently: ours is the duplicate, and
                # the seq it reserved is filled so the numbering keeps no gap.
                await chat.store.fill_void(conversation_id, seq, utcnow())
                return _resent(known, conversation_id)
            continue  # our seq was voided by a reader (we were too slow): take another
        chat.published()
        chat.metrics.message_sent()
        await chat.realtime.to_users(
            "message", {"message": message.view()}, conversation.member_ids, skip_sid=sid
        )
        return Sent(message, created=True)
    raise ChatError("busy", "The conversation is too busy; send again.", 503)


def _resent(known: Message, conversation_id: str) -> Sent:
    """A resend of a client_msg_id the sender already used (the caller checked that the
    sender is a member of ``conversation_id``): the original message when it was sent to
    this conversation. The same id sent to another conversation is a client bug (a retry
    repeats its target): answering with a message of another conversation would let the
    client believe this one was stored, so it is refused instead."""
    if known.conversation_id != conversation_id:
        raise ChatError(
            "client-msg-id-reused",
            "This client_msg_id was already used for a message in another conversation; "
            "a new message needs a new client_msg_id.",
            409,
        )
    return Sent(known, created=False)


def _document(message: Message) -> dict[str, Any]:
    return {
        "_id": message.id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "client_msg_id": message.client_msg_id,
        "body": message.body,
        "attachments": message.attachments,
        "deleted": False,
        "created": stored_time(message.created_at),
    }


async def _member_conversation(chat: Chat, user_id: str, conversation_id: str) -> Conversation:
    conversation = await chat.store.get_for_member(conversation_id, user_id)
    if conversation is None:
        raise not_found()
    return conversation


async def views(chat: Chat, messages: list[Message]) -> list[dict[str, Any]]:
    """Message objects, marking authors whose account was deleted."""
    authors = await chat.directory.get_many({m.sender_id for m in messages if not m.void})
    return [
        m.view(sender_deleted=m.sender_id in authors and authors[m.sender_id].deleted)
        for m in messages
    ]


async def join_conversation(*, chat: Chat, user_id: str, conversation_id: str) -> dict[str, Any]:
    conversation = await _member_conversation(chat, user_id, conversation_id)
    state = await chat.store.member_state(conversation_id, user_id)
    return {
        "conversation_id": conversation_id,
        "last_seq": conversation.last_seq,
        "last_read_seq": int(state.get("last_read_seq", 0)),
    }


async def history(
    *, chat: Chat, user_id: str, conversation_id: str, before_seq: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, below ``before_seq``; and the ``before_seq`` of the next page."""
    await _member_conversation(chat, user_id, conversation_id)
    messages = await chat.store.before(conversation_id, before_seq, limit)
    oldest = messages[-1].seq if messages else None
    return await views(chat, messages), (oldest if oldest is not None and oldest > 1 else None)


async def sync(
    *, chat: Chat, user_id: str, conversation_id: str, after_seq: int, limit: int
) -> dict[str, Any]:
    """The messages after ``after_seq`` in order, without ever skipping a seq: the page stops
    before a seq that is reserved but not yet stored (its sender is still writing it), so a
    client that syncs again from the last seq it got never misses one. A reservation whose
    message never landed (a crashed sender) is filled with a deleted message after
    ``seq_hole_after``."""
    conversation = await _member_conversation(chat, user_id, conversation_id)
    found: list[Message] = []
    for _ in range(3):
        found = []
        stored = await chat.store.after(conversation_id, after_seq, limit)
        expected = after_seq + 1
        hole_before: Message | None = None
        for message in stored:
            if message.seq != expected:
                hole_before = message
                break
            found.append(message)
            expected += 1
        hole = len(found) < limit and expected <= conversation.last_seq
        if not hole:
            break
        if not await _stale_hole(chat, conversation_id, hole_before):
            break
        await chat.store.fill_void(conversation_id, expected, utcnow())
    last = found[-1].seq if found else after_seq
    has_more = last < conversation.last_seq
    received = [m for m in found if m.sender_id != user_id and not m.void]
    if received:
        await delivered(
            chat=chat,
            user_id=user_id,
            conversation_id=conversation_id,
            seq=received[-1].seq,
            senders=[m.sender_id for m in received],
        )
    return {"messages": await views(chat, found), "has_more": has_more}


async def _stale_hole(chat: Chat, conversation_id: str, next_message: Message | None) -> bool:
    limit = utcnow() - timedelta(seconds=chat.settings.seq_hole_after)
    if next_message is not None:
        # The missing seq was reserved before the next one was: older than that message.
        return next_message.created_at < limit
    return await chat.store.reserved_before(conversation_id, limit)


async def delivered(
    *,
    chat: Chat,
    user_id: str,
    conversation_id: str,
    seq: int,
    senders: list[str],
) -> None:
    """A recipient's client has the messages up to ``seq``: advance their delivered mark and
    tell the senders of those messages (a ``receipt`` of kind ``delivered``). Only the
    senders: in a group, telling every member of every member's delivery would be
    members² events per message."""
    await delivered_many(
        chat=chat, marks=[DeliveredMark(conversation_id, user_id, seq, list(senders))]
    )


@dataclass(frozen=True)
class DeliveredMark:
    conversation_id: str
    user_id: str  # the recipient
    seq: int
    senders: list[str]


async def delivered_many(*, chat: Chat, marks: list[DeliveredMark]) -> None:
    """:func:`delivered` for many recipients and conversations at once: one bulk write of
    the guarded forward-only updates, then a ``receipt`` for each mark that moved."""
    moved = await chat.store.advance_many(
        "last_delivered_seq", [(m.conversation_id, m.user_id, m.seq) for m in marks]
    )
    for mark in marks:
        if (mark.conversation_id, mark.user_id) not in moved:
            continue
        await chat.realtime.to_users(
            "receipt",
            {
                "conversation_id": mark.conversation_id,
                "user_id": mark.user_id,
                "kind": "delivered",
                "seq": mark.seq,
            },
            [uid for uid in mark.senders if uid != mark.user_id],
        )


async def mark_read(*, chat: Chat, user_id: str, conversation_id: str, seq: int) -> dict[str, Any]:
    conversation = await _member_conversation(chat, user_id, conversation_id)
    if seq > conversation.last_seq:
        raise ChatError(
            "invalid-seq", f"seq {seq} is beyond the conversation's last ({conversation.last_seq})."
        )
    await chat.store.advance(conversation_id, user_id, "last_delivered_seq", seq)
    if await chat.store.advance(conversation_id, user_id, "last_read_seq", seq):
        await chat.realtime.to_users(
            "receipt",
            {"conversation_id": conversation_id, "user_id": user_id, "kind": "read", "seq": seq},
            [uid for uid in conversation.member_ids if uid != user_id],
        )
    state = await chat.store.member_state(conversation_id, user_id)
    return {"last_read_seq": int(state.get("last_read_seq", 0))}


async def edit_message(
    *, chat: Chat, user_id: str, conversation_id: str, message_id: str, body: str
) -> dict[str, Any]:
    conversation = await _member_conversation(chat, user_id, conversation_id)
    text = clean_body(body)
    return await _change_own_message(
        chat,
        user_id,
        conversation,
        message_id,
        "edits",
        lambda found, now: MessageUpdated(
            message_id=message_id,
            conversation_id=conversation_id,
            seq=found.seq,
            sender_id=user_id,
            edited_at=now,
        ),
        lambda now: {"$set": {"body": text, "edited": stored_time(now)}},
    )


async def delete_message(
    *, chat: Chat, user_id: str, conversation_id: str, message_id: str
) -> None:
    conversation = await _member_conversation(chat, user_id, conversation_id)
    await _change_own_message(
        chat,
        user_id,
        conversation,
        message_id,
        "deletes",
        lambda found, now: MessageDeleted(
            message_id=message_id,
            conversation_id=conversation_id,
            seq=found.seq,
            sender_id=user_id,
            deleted_at=now,
        ),
        lambda now: {"$set": {"deleted": True, "body": "", "attachments": []}},
    )


async def _change_own_message(
    chat: Chat,
    user_id: str,
    conversation: Conversation,
    message_id: str,
    verb: str,
    event_data: Callable[[Message, datetime], Any],
    change: Callable[[datetime], dict[str, Any]],
) -> dict[str, Any]:
    """Change the caller's own live message (else 404, or 403 for someone else's) with its
    event in the same write, and show every member the new version."""
    conversation_id = conversation.id
    found = await chat.store.message(conversation_id, message_id)
    if found is None or found.deleted:
        raise ChatError("message-not-found", "No such message.", 404)
    if found.sender_id != user_id:
        raise forbidden(f"Only the sender {verb} a message.")
    now = utcnow()
    event = new_envelope(event_data(found, now), service="chat", subject=conversation_id)
    updated = await chat.store.update_message(
        conversation_id, message_id, user_id, change(now), [event]
    )
    if updated is None:
        raise ChatError("message-not-found", "No such message.", 404)
    chat.published()
    view = updated.view()
    await chat.realtime.to_users("message", {"message": view}, conversation.member_ids)
    return view

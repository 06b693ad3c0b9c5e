"""Conversations: create (direct or group), read, list, members, mute."""

from __future__ import annotations

from typing import Any

from chat_svc.domain.conversations import (
    MAX_GROUP_MEMBERS,
    Conversation,
    direct_conversation_id,
    group_conversation_id,
)
from chat_svc.domain.errors import ChatError, forbidden, not_found
from chat_svc.handlers.common import Chat
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.chat import ConversationCreated

_MEMBERSHIP_TRIES = 20


async def _require_known_users(chat: Chat, user_ids: list[str]) -> None:
    known = await chat.directory.get_many(user_ids)
    unknown = [uid for uid in user_ids if uid not in known or known[uid].deleted]
    if unknown:
        raise ChatError("unknown-user", f"No such user: {', '.join(unknown)}.", 422)


async def _require_active_caller(chat: Chat, user_id: str) -> None:
    user = await chat.directory.get(user_id)
    if user is not None and user.deleted:
        raise forbidden("This account has been deleted.")


async def create_conversation(
    *,
    chat: Chat,
    user_id: str,
    kind: str,
    member_ids: list[str],
    title: str | None,
) -> tuple[Conversation, bool]:
    """The conversation and whether this call created it (a direct one exists only once)."""
    await _require_active_caller(chat, user_id)
    others = [uid for uid in dict.fromkeys(member_ids) if uid != user_id]
    now = utcnow()
    if kind == "direct":
        if len(others) != 1 or len(member_ids) != 1:
            raise ChatError(
                "invalid-members", "A direct conversation names exactly one other user.", 422
            )
        if title is not None:
            raise ChatError("invalid-title", "A direct conversation has no title.", 422)
        conversation_id = direct_conversation_id(user_id, others[0])
        existing = await chat.store.get_for_member(conversation_id, user_id)
        if existing is not None:
            # Opening a direct conversation again is where a member row lost to a crash
            # (before rows were written first) comes back.
            await chat.store.restore_member_rows(existing, now)
            return existing, False
        await _require_known_users(chat, others)
        members = sorted([user_id, others[0]])
        admins: list[str] = []
    else:
        if not title:
            raise ChatError("invalid-title", "A group conversation needs a title.", 422)
        if len(others) + 1 > MAX_GROUP_MEMBERS:
            raise ChatError(
                "too-many-members", f"A group holds at most {MAX_GROUP_MEMBERS} members.", 422
            )
        await _require_known_users(chat, others)
        conversation_id = group_conversation_id()
        members = [user_id, *others]
        admins = [user_id]
    conversation = Conversation(
        id=conversation_id,
        kind="direct" if kind == "direct" else "group",
        title=title,
        member_ids=members,
        admin_ids=admins,
        created_by=user_id,
        last_seq=0,
        created_at=now,
    )
    event = new_envelope(
        ConversationCreated(
            conversation_id=conversation.id,
            kind=conversation.kind,
            member_ids=members,
            created_by=user_id,
            title=title,
            created_at=now,
        ),
        service="chat",
        subject=conversation.id,
    )
    created = await chat.store.create_conversation(conversation, event, now)
    if created:
        chat.published()
        return conversation, True
    # Both users created the direct conversation at once: the other call won.
    existing = await chat.store.get_for_member(conversation_id, user_id)
    if existing is None:
        # A direct conversation this user has left (account deletion of the peer keeps
        # it): the pair's id is taken, so re-activate the membership.
        raise ChatError("conflict", "This conversation cannot be created again.", 409)
    return existing, False


async def conversation_view(*, chat: Chat, user_id: str, conversation_id: str) -> dict[str, Any]:
    conversation = await chat.store.get_for_member(conversation_id, user_id)
    if conversation is None:
        raise not_found()
    state = await chat.store.member_state(conversation_id, user_id)
    return await _member_view(chat, conversation, user_id, state)


async def _member_view(
    chat: Chat, conversation: Conversation, user_id: str, state: dict[str, Any]
) -> dict[str, Any]:
    """The conversation as ``user_id`` (with their member ``state``) sees it."""
    last_read = int(state.get("last_read_seq", 0))
    unread = 0
    if conversation.last_seq > last_read:
        unread = await chat.store.unread_count(conversation.id, user_id, last_read)
    return conversation.view(
        unread_count=unread,
        last_read_seq=last_read,
        last_message=await chat.store.latest_visible(conversation.id),
        muted=bool(state.get("muted")),
    )


async def list_conversations(
    *, chat: Chat, user_id: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the user's conversations (by id) and the id to continue after."""
    ids = await chat.store.page_of_member(user_id, after, limit + 1)
    more = len(ids) > limit
    ids = ids[:limit]
    conversations = await chat.store.get_many(ids)
    states = await chat.store.member_states(ids, user_id)
    items = []
    for cid in ids:
        conversation = conversations.get(cid)
        if conversation is None or not conversation.is_member(user_id):
            continue  # membership changing under us: the conversation's list is the truth
        items.append(await _member_view(chat, conversation, user_id, states.get(cid, {})))
    return items, (ids[-1] if more and ids else None)


async def _change_members(
    chat: Chat,
    conversation_id: str,
    change: Any,
) -> Conversation:
    for _ in range(_MEMBERSHIP_TRIES):
        conversation = await chat.store.get(conversation_id)
        if conversation is None:
            raise not_found()
        members, admins = change(conversation)
        if members == conversation.member_ids and admins == conversation.admin_ids:
            return conversation
        if await chat.store.replace_members(conversation, members, admins, utcnow()):
            return conversation
    raise ChatError("conflict", "The member list kept changing; try again.", 409)


async def add_member(
    *, chat: Chat, user_id: str, conversation_id: str, new_member: str
) -> dict[str, Any]:
    conversation = await chat.store.get_for_member(conversation_id, user_id)
    if conversation is None:
        raise not_found()
    if conversation.kind != "group":
        raise ChatError("not-a-group", "Members are added to group conversations only.", 422)
    if not conversation.is_admin(user_id):
        raise forbidden("Only the group's admins add members.")
    await _require_known_users(chat, [new_member])

    def change(c: Conversation) -> tuple[list[str], list[str]]:
        if new_member in c.member_ids:
            return c.member_ids, c.admin_ids
        if len(c.member_ids) >= MAX_GROUP_MEMBERS:
            raise ChatError(
                "too-many-members", f"A group holds at most {MAX_GROUP_MEMBERS} members.", 422
            )
        return [*c.member_ids, new_member], c.admin_ids

    await chat.store.activate_member(conversation_id, new_member, utcnow())
    await _change_members(chat, conversation_id, change)
    return await conversation_view(chat=chat, user_id=user_id, conversation_id=conversation_id)


async def remove_member(*, chat: Chat, user_id: str, conversation_id: str, member: str) -> None:
    """An admin removes a member, or a member leaves (``member == user_id``)."""
    conversation = await chat.store.get_for_member(conversation_id, user_id)
    if conversation is None:
        raise not_found()
    if conversation.kind != "group":
        raise ChatError("not-a-group", "Members leave group conversations only.", 422)
    if member != user_id and not conversation.is_admin(user_id):
        raise forbidden("Only the group's admins remove members.")
    await leave(chat, conversation_id, member)


async def leave(chat: Chat, conversation_id: str, member: str) -> None:
    """Take ``member`` out of the conversation (the list first: it is what grants access)."""

    def change(c: Conversation) -> tuple[list[str], list[str]]:
        members = [uid for uid in c.member_ids if uid != member]
        admins = [uid for uid in c.admin_ids if uid != member]
        if not admins and members and c.kind == "group":
            admins = [members[0]]  # a group never loses its last admin
        return members, admins

    await _change_members(chat, conversation_id, change)
    await chat.store.deactivate_member(conversation_id, member)
    await chat.realtime.leave_conversation(await chat.presence.sids_of(member), conversation_id)


async def set_muted(*, chat: Chat, user_id: str, conversation_id: str, muted: bool) -> None:
    if await chat.store.get_for_member(conversation_id, user_id) is None:
        raise not_found()
    await chat.store.set_muted(conversation_id, user_id, muted)

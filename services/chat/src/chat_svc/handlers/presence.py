"""Presence: a user is online while any of their sockets is connected on any replica;
their conversation peers get ``presence`` events when that changes."""

from __future__ import annotations

from chat_svc.adapters.presence import PresenceChange
from chat_svc.handlers.common import Chat
from switchyard.envelope import format_time, utcnow

MAX_PEERS = 5000


def presence_view(change: PresenceChange) -> dict[str, object]:
    return {
        "user_id": change.user_id,
        "online": change.online,
        "last_seen": format_time(change.last_seen) if change.last_seen else None,
    }


async def peers_of(chat: Chat, user_id: str) -> list[str]:
    """Everyone who shares a conversation with the user."""
    conversations = await chat.store.get_many(await chat.store.conversations_of(user_id))
    peers: dict[str, None] = {}
    for conversation in conversations.values():
        if not conversation.is_member(user_id):
            continue
        for uid in conversation.member_ids:
            if uid != user_id:
                peers[uid] = None
    return list(peers)[:MAX_PEERS]


async def announce(chat: Chat, change: PresenceChange | None) -> None:
    if change is None:
        return
    await chat.realtime.to_users(
        "presence", presence_view(change), await peers_of(chat, change.user_id)
    )


async def socket_connected(*, chat: Chat, user_id: str, sid: str) -> None:
    await announce(chat, await chat.presence.connected(user_id, sid, utcnow()))


async def socket_disconnected(*, chat: Chat, user_id: str, sid: str) -> None:
    await announce(chat, await chat.presence.disconnected(user_id, sid, utcnow()))


async def heartbeat_and_sweep(*, chat: Chat) -> None:
    """One round of this replica's presence upkeep: refresh its connections, then take the
    users of replicas that stopped refreshing theirs offline."""
    now = utcnow()
    await chat.presence.heartbeat(now)
    for change in await chat.presence.sweep(now):
        await announce(chat, change)

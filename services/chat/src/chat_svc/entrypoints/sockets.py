"""The Socket.IO server at ``/socket.io/`` (DESIGN §5 chat): connect with a token, the client
events with their acks, and the server events.

Every client event is acknowledged. Its payload is validated by a pydantic model; a refusal
is the ack ``{"error": {"code", "message"}}`` and the socket stays connected. A socket
sending faster than its flood limit gets ``rate-limited``; one that keeps on is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import socketio
from pydantic import BaseModel, ValidationError

from chat_svc.domain.errors import ChatError
from chat_svc.domain.flood import TokenBucket
from chat_svc.handlers import messages, presence
from chat_svc.handlers.common import Chat, conversation_room, user_room
from chat_svc.handlers.receipts import DeliveryBatcher
from chat_svc.handlers.typing import TypingRelay
from switchyard.authn import socketio_identity
from switchyard.sockets.chat import JoinConversation, MarkRead, SendMessage, Sync, Typing
from switchyard.tokens import TokenVerifier

log = logging.getLogger("chat.sockets")

ModelT = TypeVar("ModelT", bound=BaseModel)


def error_ack(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class SocketEndpoint:
    """Binds the chat commands to a ``socketio.AsyncServer``."""

    def __init__(
        self, server: socketio.AsyncServer, chat: Chat, verifier: Callable[[], TokenVerifier]
    ) -> None:
        self.server = server
        self.chat = chat
        self.verifier = verifier
        settings = chat.settings
        self.typing = TypingRelay(
            chat.realtime, throttle=settings.typing_throttle, expiry=settings.typing_expiry
        )
        self.deliveries = DeliveryBatcher(chat, window=settings.delivery_ack_window)
        self._buckets: dict[str, TokenBucket] = {}
        self._users: dict[str, str] = {}
        self._open_by_user: dict[str, int] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._connecting: dict[str, asyncio.Task[None]] = {}
        # The token's session (``sid`` claim) of each socket, and the sockets of each session:
        # a revoked session's sockets are closed (``session_revoked``).
        self._session_of: dict[str, str] = {}
        self._sockets_of: dict[str, set[str]] = {}
        server.on("connect", self.on_connect)
        server.on("disconnect", self.on_disconnect)
        self._event("join_conversation", JoinConversation, self.join_conversation)
        self._event("send_message", SendMessage, self.send_message)
        self._event("typing", Typing, self.on_typing)
        self._event("mark_read", MarkRead, self.mark_read)
        self._event("sync", Sync, self.sync)
        # Anything else a client emits gets an ack error too (never silence).
        server.on("*", self.unknown_event)

    # connect / disconnect -------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            identity = await socketio_identity(self.verifier(), environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            self.chat.metrics.socket_refused("unauthorized")
            raise
        user = await self.chat.directory.get(identity.user_id)
        if user is not None and user.deleted:
            self.chat.metrics.socket_refused("account-deleted")
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized", {"reason": "account-deleted"}
            )
        user_id = identity.user_id
        if self._open_by_user.get(user_id, 0) >= self.chat.settings.max_sockets_per_user:
            self.chat.metrics.socket_refused("too-many-sockets")
            raise socketio.exceptions.ConnectionRefusedError(
                "too-many-sockets", {"reason": "too-many-sockets"}
            )
        session = identity.claims.get("sid")
        if isinstance(session, str) and session:
            if session in self.verifier().denied:  # revoked while we looked the user up
                self.chat.metrics.socket_refused("unauthorized")
                raise socketio.exceptions.ConnectionRefusedError(
                    "unauthorized", {"reason": "revoked"}
                )
            self._session_of[sid] = session
            self._sockets_of.setdefault(session, set()).add(sid)
        self._users[sid] = user_id
        self._open_by_user[user_id] = self._open_by_user.get(user_id, 0) + 1
        self._buckets[sid] = TokenBucket(
            rate=self.chat.settings.socket_event_rate, burst=self.chat.settings.socket_event_burst
        )
        await self.server.enter_room(sid, user_room(identity.user_id))
        # Clients reconnect with a fresh token: a socket never outlives the one it opened with.
        remaining = max(0.0, identity.expires_at - time.time())
        self._expiry[sid] = asyncio.get_running_loop().call_later(
            remaining, self._disconnect_soon, sid
        )
        self.chat.metrics.socket_connected()
        # Presence (store writes, the peers' events) happens beside the connect, so the
        # client's connect completes after the token check and the room; the disconnect
        # handler waits for it before undoing it.
        task = asyncio.create_task(self._record_connect(identity.user_id, sid))
        self._connecting[sid] = task
        task.add_done_callback(lambda _: self._connecting.pop(sid, None))

    async def _record_connect(self, user_id: str, sid: str) -> None:
        try:
            await presence.socket_connected(chat=self.chat, user_id=user_id, sid=sid)
            # An account deletion closes the sockets presence knows: one handled while this
            # socket was being recorded did not see it, but its tombstone is visible now.
            user = await self.chat.directory.get(user_id)
            if user is not None and user.deleted:
                log.info("closing a socket of a deleted account", extra={"sid": sid})
                self._disconnect_soon(sid)
        except Exception:
            # The next heartbeat cannot repair a missing connection record: close the
            # socket, the client reconnects and presence is recorded then.
            log.exception("recording a connection failed; closing the socket", extra={"sid": sid})
            self._disconnect_soon(sid)

    async def on_disconnect(self, sid: str, *reason: Any) -> None:
        user_id = self._users.pop(sid, None)
        self._buckets.pop(sid, None)
        timer = self._expiry.pop(sid, None)
        if timer is not None:
            timer.cancel()
        session = self._session_of.pop(sid, None)
        if session is not None:
            sockets = self._sockets_of.get(session, set())
            sockets.discard(sid)
            if not sockets:
                self._sockets_of.pop(session, None)
        if user_id is None:
            return
        left = self._open_by_user.get(user_id, 0) - 1
        if left > 0:
            self._open_by_user[user_id] = left
        else:
            self._open_by_user.pop(user_id, None)
        self.chat.metrics.socket_disconnected()
        self.typing.forget_socket(sid)
        connecting = self._connecting.pop(sid, None)
        if connecting is not None:
            await asyncio.wait([connecting])
        await presence.socket_disconnected(chat=self.chat, user_id=user_id, sid=sid)

    def session_revoked(self, session_id: str) -> None:
        """A deny-list listener: auth revoked ``session_id`` (logout, logout-all, password
        change, …), so this replica's sockets opened with its tokens are closed now. Every
        replica follows the revocations itself."""
        for sid in list(self._sockets_of.get(session_id, ())):
            log.info("closing a socket of a revoked session", extra={"sid": sid})
            self._disconnect_soon(sid)

    def _disconnect_soon(self, sid: str) -> None:
        self._spawn(self.server.disconnect(sid))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # events ---------------------------------------------------------------------------

    def _event(
        self,
        name: str,
        model: type[ModelT],
        handler: Callable[[str, str, ModelT], Awaitable[dict[str, Any]]],
    ) -> None:
        async def on_event(sid: str, *args: Any) -> dict[str, Any]:
            outcome = "ok"
            try:
                user_id = self._users.get(sid)
                if user_id is None:
                    outcome = "refused"
                    return error_ack("not-connected", "Connect first.")
                if not self._allow(sid):
                    outcome = "rate_limited"
                    return error_ack("rate-limited", "Too many events; slow down.")
                if len(args) != 1:
                    raise ChatError("invalid-payload", f"{name} takes one object as its payload.")
                payload = model.model_validate(args[0])
                return await handler(sid, user_id, payload)
            except ValidationError as error:
                outcome = "invalid"
                return error_ack("invalid-payload", _validation_message(error))
            except ChatError as error:
                outcome = "invalid" if error.code == "invalid-payload" else "refused"
                return error_ack(error.code, error.message)
            except Exception:
                outcome = "error"
                log.exception("socket event failed", extra={"event": name, "sid": sid})
                return error_ack("internal", "The server could not handle this event.")
            finally:
                self.chat.metrics.socket_event(name, outcome)

        self.server.on(name, on_event)

    async def unknown_event(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        self.chat.metrics.socket_event("unknown", "invalid")
        if not self._allow(sid):
            return error_ack("rate-limited", "Too many events; slow down.")
        return error_ack("unknown-event", "No such event.")

    def _allow(self, sid: str) -> bool:
        bucket = self._buckets.get(sid)
        if bucket is None:
            return False
        if bucket.allow():
            return True
        if bucket.refused_in_a_row >= self.chat.settings.flood_disconnect_after:
            log.warning("disconnecting a flooding socket", extra={"sid": sid})
            self._disconnect_soon(sid)
        return False

    async def join_conversation(
        self, sid: str, user_id: str, payload: JoinConversation
    ) -> dict[str, Any]:
        joined = await messages.join_conversation(
            chat=self.chat, user_id=user_id, conversation_id=payload.conversation_id
        )
        await self.server.enter_room(sid, conversation_room(payload.conversation_id))
        return joined

    async def send_message(self, sid: str, user_id: str, payload: SendMessage) -> dict[str, Any]:
        sent = await messages.send_message(
            chat=self.chat,
            user_id=user_id,
            conversation_id=payload.conversation_id,
            body=payload.body,
            client_msg_id=payload.client_msg_id,
            attachments=payload.attachments,
            sid=sid,
        )
        return {"message": sent.message.view()}

    async def on_typing(self, sid: str, user_id: str, payload: Typing) -> dict[str, Any]:
        if await self.chat.store.get_for_member(payload.conversation_id, user_id) is None:
            raise ChatError("not-found", "No such conversation.", 404)
        await self.typing.update(user_id, payload.conversation_id, payload.is_typing, sid)
        return {}

    async def mark_read(self, sid: str, user_id: str, payload: MarkRead) -> dict[str, Any]:
        return await messages.mark_read(
            chat=self.chat,
            user_id=user_id,
            conversation_id=payload.conversation_id,
            seq=payload.seq,
        )

    async def sync(self, sid: str, user_id: str, payload: Sync) -> dict[str, Any]:
        return await messages.sync(
            chat=self.chat,
            user_id=user_id,
            conversation_id=payload.conversation_id,
            after_seq=payload.after_seq,
            limit=payload.limit,
        )

    # delivery receipts ----------------------------------------------------------------

    def delivery_ack(
        self, event: str, sid: str, data: Any
    ) -> Callable[..., Awaitable[None]] | None:
        """The ack callback of a ``message`` sent to the socket ``sid`` of this replica (see
        the fan-out manager): its client acknowledging it is the ``delivered`` receipt."""
        recipient = self._users.get(sid)
        if event != "message" or recipient is None or not isinstance(data, dict):
            return None
        message = data.get("message")
        if not isinstance(message, dict) or message.get("deleted"):
            return None
        sender = message.get("sender_id")
        conversation_id, seq = message.get("conversation_id"), message.get("seq")
        if (
            sender == recipient
            or not isinstance(sender, str)
            or not isinstance(conversation_id, str)
            or not isinstance(seq, int)
        ):
            return None
        created = message.get("created_at")
        sent_at = datetime.fromisoformat(created) if isinstance(created, str) else None

        async def acked(*_: Any) -> None:
            self.deliveries.acked(conversation_id, recipient, seq, sender, sent_at)

        return acked

    async def close(self) -> None:
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        await self.typing.close()
        await self.deliveries.close()
        for task in list(self._connecting.values()):
            task.cancel()
        for task in list(self._tasks):
            task.cancel()

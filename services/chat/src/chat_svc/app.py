"""The one wiring place: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiohttp import web

from chat_svc import keys
from chat_svc.adapters.attachments import ATTACHMENTS, Attachments
from chat_svc.adapters.fanout import FanoutManager
from chat_svc.adapters.presence import Presence, presence_indexes
from chat_svc.adapters.realtime import SocketRealtime
from chat_svc.adapters.store import OUTBOX_COLLECTIONS, ChatStore, store_indexes
from chat_svc.entrypoints.consumers import build_registry
from chat_svc.entrypoints.http import add_routes
from chat_svc.entrypoints.sockets import SocketEndpoint
from chat_svc.handlers.common import Chat
from chat_svc.handlers.presence import heartbeat_and_sweep
from chat_svc.metrics import ChatMetrics
from chat_svc.settings import ChatSettings
from switchyard import keys as shared_keys
from switchyard.authn import VERIFIER, authn_middleware, verifier_context
from switchyard.bus import bus_context, consumers_context, inbox_indexes
from switchyard.directory import UserDirectory
from switchyard.envelope import utcnow
from switchyard.mongo import mongo_context
from switchyard.mongo.client import Index
from switchyard.outbox import outbox_context, outbox_indexes
from switchyard.revocation import DENY_LIST, revocation_context
from switchyard.web import new_app

log = logging.getLogger("chat.app")

USERS_COLLECTION = "chat_users"  # the switchyard.directory read model
# A Socket.IO packet bigger than this is refused by Engine.IO (a 4,000-character body is
# far below it, even escaped).
MAX_PACKET_BYTES = 256 * 1024


def indexes() -> list[Index]:
    return [
        *store_indexes(),
        *presence_indexes(),
        *outbox_indexes(OUTBOX_COLLECTIONS),
        *inbox_indexes(),
    ]


class ChatSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, strict about the protocol (as the JS server is):

    - JSON only: chat has no binary payloads. A binary packet announces attachments the
      stock server buffers until the last one arrives (any number of them, each up to
      ``MAX_PACKET_BYTES``: memory without bound for one socket), so its Engine.IO
      connection is closed at the first binary packet or frame;
    - a packet that does not parse closes the connection (the stock server logged it and
      kept a session that never connected);
    - a session that has not connected ``connect_timeout`` seconds after its handshake is
      closed (without a token it would otherwise live as long as it answers pings).
    """

    def __init__(self, *, connect_timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.connect_timeout = connect_timeout
        self._connect_deadlines: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        self._connect_deadlines[eio_sid] = asyncio.get_running_loop().call_later(
            self.connect_timeout, self._connect_deadline, eio_sid
        )
        return await super()._handle_eio_connect(eio_sid, environ)

    def _connect_deadline(self, eio_sid: str) -> None:
        self._connect_deadlines.pop(eio_sid, None)
        if self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            log.info("closing a session that never connected", extra={"eio_sid": eio_sid})
            self._close_soon(eio_sid)

    def _close_soon(self, eio_sid: str) -> None:
        task = asyncio.ensure_future(self.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if not isinstance(data, str) or data[:1] in _BINARY_PACKET_TYPES:
            log.warning("closing a socket that sent a binary packet", extra={"eio_sid": eio_sid})
            self._binary_packet.pop(eio_sid, None)
            await self.eio.disconnect(eio_sid)
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError as error:  # the packet does not parse, or breaks the protocol
            log.warning(
                "closing a socket that broke the protocol",
                extra={"eio_sid": eio_sid, "error": str(error)[:200]},
            )
            await self.eio.disconnect(eio_sid)

    def stop_deadlines(self) -> None:
        for deadline in self._connect_deadlines.values():
            deadline.cancel()
        self._connect_deadlines.clear()
        for task in list(self._closing):
            task.cancel()

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        deadline = self._connect_deadlines.pop(eio_sid, None)
        if deadline is not None:
            deadline.cancel()
        await super()._handle_eio_disconnect(eio_sid, reason)


_BINARY_PACKET_TYPES = (str(socketio.packet.BINARY_EVENT), str(socketio.packet.BINARY_ACK))


def socket_server(settings: ChatSettings) -> socketio.AsyncServer:
    manager = FanoutManager(settings.amqp_url, settings.socketio_exchange)
    return ChatSocketServer(
        connect_timeout=settings.socketio_connect_timeout,
        async_mode="aiohttp",
        client_manager=manager,
        ping_interval=settings.socketio_ping_interval,
        ping_timeout=settings.socketio_ping_timeout,
        cors_allowed_origins=settings.cors_origins or None,
        max_http_buffer_size=MAX_PACKET_BYTES,
        logger=False,
        engineio_logger=False,
    )


async def _chat(app: web.Application) -> AsyncIterator[None]:
    """The repositories and the socket endpoint; then the fan-out listener and the presence
    upkeep, stopped first."""
    settings = app[shared_keys.SETTINGS]
    assert isinstance(settings, ChatSettings)
    db = app[shared_keys.MONGO_DB]
    server = app[keys.SOCKETS]
    relay = app[shared_keys.OUTBOX_RELAY]
    chat = Chat(
        store=ChatStore(db),
        attachments=Attachments(db[ATTACHMENTS]),
        presence=Presence(db, replica=uuid.uuid4().hex, ttl=settings.presence_ttl),
        directory=UserDirectory(db[USERS_COLLECTION]),
        realtime=SocketRealtime(server),
        metrics=app[keys.CHAT_METRICS],
        settings=settings,
        published=relay.notify,
    )
    app[keys.CHAT] = chat
    endpoint = SocketEndpoint(server, chat, lambda: app[VERIFIER])
    app[keys.SOCKET_ENDPOINT] = endpoint
    app[DENY_LIST].listeners.append(endpoint.session_revoked)
    manager = server.manager
    assert isinstance(manager, FanoutManager)
    manager.ack_factory = endpoint.delivery_ack
    manager.acked_events = frozenset({"message"})
    manager.on_publish_failure = chat.metrics.fanout_failed
    server.manager_initialized = True
    manager.initialize()  # listen to the fan-out exchange now, not at the first connect
    upkeep = asyncio.create_task(_presence_upkeep(chat))
    try:
        yield
    finally:
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        await endpoint.close()
        if isinstance(server, ChatSocketServer):
            server.stop_deadlines()
        await chat.presence.forget_replica(utcnow())
        await manager.close()


async def _presence_upkeep(chat: Chat) -> None:
    interval = chat.settings.presence_heartbeat
    while True:
        try:
            await heartbeat_and_sweep(chat=chat)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("presence upkeep failed; trying again next heartbeat")
        await asyncio.sleep(interval)


def create_app(settings: ChatSettings) -> web.Application:
    app = new_app(settings)
    app[keys.CHAT_METRICS] = ChatMetrics(app[shared_keys.METRICS])
    app.middlewares.append(authn_middleware())
    server = socket_server(settings)
    server.attach(app, socketio_path="socket.io")
    app[keys.SOCKETS] = server
    app.cleanup_ctx.extend(
        [
            mongo_context(indexes()),
            bus_context,
            outbox_context(OUTBOX_COLLECTIONS),
            verifier_context(),
            revocation_context(),
            _chat,
            consumers_context(build_registry),
        ]
    )
    add_routes(app)
    return app

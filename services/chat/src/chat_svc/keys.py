"""Every web.AppKey of the chat service."""

from __future__ import annotations

import socketio
from aiohttp import web

from chat_svc.entrypoints.sockets import SocketEndpoint
from chat_svc.handlers.common import Chat
from chat_svc.metrics import ChatMetrics

CHAT = web.AppKey("chat.chat", Chat)
CHAT_METRICS = web.AppKey("chat.metrics", ChatMetrics)
SOCKETS = web.AppKey("chat.sockets", socketio.AsyncServer)
SOCKET_ENDPOINT = web.AppKey("chat.socket_endpoint", SocketEndpoint)

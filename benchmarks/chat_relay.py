"""The chat benchmark's baseline: a bare python-socketio relay (no persistence, no auth, no
gateway, one process). ``python -m benchmarks.chat_relay <port>``.

A client connects with ``auth: {user}``; ``send_message {to, body}`` emits ``message`` to
the room of user ``to`` and acks ``{"ok": true}`` — the least a relay can do.
"""

from __future__ import annotations

import sys
from typing import Any

import socketio
from aiohttp import web


def build() -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")

    @sio.event  # type: ignore[misc]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, f"user:{auth['user']}")

    @sio.event  # type: ignore[misc]
    async def send_message(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.emit("message", {"message": data}, room=f"user:{data['to']}")
        return {"ok": True}

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    web.run_app(build(), host="127.0.0.1", port=int(sys.argv[1]), print=None)

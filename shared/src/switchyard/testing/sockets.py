"""A Socket.IO test client: the stock python-socketio ``AsyncClient``, recording every server
event it receives and answering each with an ack (as the stock clients do when the app's
listener calls its ack function), so a test reads what arrived and calls events with acks.

    client = SocketClient(url, token=token)          # auth: {token}
    await client.connect(transports=["websocket"])
    ack = await client.call("send_message", {...})   # the ack's payload
    msg = await client.wait_for("message", lambda m: m["message"]["seq"] == 1)
    await client.disconnect()

``connect_error`` data lands in ``client.refusal`` when the server refuses the connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import socketio


class SocketClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        ack_events: bool = True,
        reconnection: bool = False,
    ) -> None:
        self.url = url
        self.token = token
        self.headers = dict(headers or {})
        # False: receive events without acknowledging them. python-socketio acks an event
        # once its handler returns, so such a client's handler never returns (until the
        # client disconnects), as a JS app whose listener never calls its ack function.
        self.ack_events = ack_events
        self._released = asyncio.Event()
        self.client = socketio.AsyncClient(reconnection=reconnection)
        self.received: list[tuple[str, Any]] = []
        self.refusal: Any = None
        self.disconnects = 0
        self._arrived = asyncio.Event()
        self.client.on("*", self._record)
        self.client.on("connect_error", self._refused)
        self.client.on("disconnect", self._disconnected)

    async def _record(self, event: str, *args: Any) -> Any:
        self.received.append((event, args[0] if len(args) == 1 else list(args)))
        self._arrived.set()
        if not self.ack_events:
            await self._released.wait()
        return {}

    async def _refused(self, data: Any = None) -> None:
        self.refusal = data

    async def _disconnected(self, *args: Any) -> None:
        self.disconnects += 1
        self._arrived.set()

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    async def connect(self, *, transports: list[str] | None = None, timeout: float = 20.0) -> None:
        """Connect (raises ``socketio.exceptions.ConnectionError`` when refused)."""
        auth = {"token": self.token} if self.token is not None else None
        await self.client.connect(
            self.url,
            auth=auth,
            headers=self.headers,
            transports=transports or ["websocket"],
            socketio_path="socket.io",
            wait_timeout=timeout,
        )

    async def call(self, event: str, data: Any = None, *, timeout: float = 20.0) -> Any:
        """Emit ``event`` and return the server's ack."""
        if data is None:
            return await self.client.call(event, timeout=timeout)
        return await self.client.call(event, data, timeout=timeout)

    def events(self, name: str) -> list[Any]:
        return [data for event, data in self.received if event == name]

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[Any], bool] = lambda _: True,
        *,
        timeout: float = 20.0,
    ) -> Any:
        """The first received ``name`` event whose data satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for data in self.events(name):
                if predicate(data):
                    return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {name!r} event matching within {timeout} s; got "
                    f"{[e for e, _ in self.received][-20:]}"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))
            except TimeoutError:
                continue

    async def wait_disconnected(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.client.connected:
            if time.monotonic() > deadline:
                raise AssertionError(f"still connected after {timeout} s")
            await asyncio.sleep(0.05)

    async def disconnect(self) -> None:
        self._released.set()
        if self.client.connected:
            await self.client.disconnect()

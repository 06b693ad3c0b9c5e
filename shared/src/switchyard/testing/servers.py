"""Real servers for tests, all on 127.0.0.1: an aiohttp app on a free port, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from types import TracebackType
from typing import Self

from aiohttp import web

# Ports handed to test servers: below the kernel's ephemeral range (32768-60999 by default),
# which every outgoing connection draws from, so a port found with bind(0) could be taken by
# some client between the check and the server's bind. Each pytest-xdist worker has its own
# slice and walks it in turn (from a random start), so two workers never race for one port.
_PORTS_FROM, _PORTS_TO, _SLICE = 20_000, 32_000, 1_500
_next_port: dict[str, int] = {}


def free_port() -> int:
    """A port free now on 127.0.0.1, for a server the test starts next."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    width = min(_SLICE, (_PORTS_TO - _PORTS_FROM) // max(workers, 1))  # slices never overlap
    first = _PORTS_FROM + index * width
    for _ in range(width):
        offset = _next_port.get("offset", random.randrange(width)) % width
        _next_port["offset"] = (offset + 1) % width
        port = first + offset
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the slice is full: whatever the kernel has
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def delete_exchange(amqp_url: str, exchange: str) -> None:
    """Remove a throwaway exchange (a test's or a benchmark's namespace)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def docker_available() -> bool:
    """True only when a Docker engine answers (a client alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    # No engine, no socket, no permission: all mean "use the local services".
    except Exception:  # noqa: BLE001
        return False


class AppServer:
    """Runs an aiohttp application on 127.0.0.1 with its full startup/cleanup cycle."""

    def __init__(
        self, app: web.Application, port: int | None = None, shutdown_timeout: float = 5.0
    ) -> None:
        self.app = app
        self.port = port or free_port()
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class TcpProxy:
    """A TCP forwarder the test can cut and restore, to play a broker or store outage
    without touching the shared server other tests use."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # either side went away: the other side is closed below
        finally:
            writer.close()
            self._writers.discard(writer)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._pipes, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

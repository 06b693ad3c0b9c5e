"""The stock Node ``socket.io-client`` (npm, pinned in ``tests-e2e/node/package-lock.json``),
driven from a test through ``tests-e2e/node/driver.mjs``: the same calls as
:class:`switchyard.testing.sockets.SocketClient`, answered by the real JavaScript client.

    client = await NodeSocketClient.start()
    await client.connect(url, token, transports=["polling"])
    ack = await client.call("send_message", {...})
    await client.wait_for("message", lambda m: ...)
    await client.close()

The client's folder is found from the repository root; a missing ``node_modules`` is
installed with ``npm ci`` (what CI runs first). No Node on the machine is a failure with the
reason, never a silent skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

NODE_DIR = Path("tests-e2e") / "node"


def node_client_dir() -> Path:
    """``tests-e2e/node`` of this repository, with its locked dependencies installed."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / NODE_DIR
        if (candidate / "package.json").exists():
            break
    else:
        raise RuntimeError(f"{NODE_DIR} not found above {here}")
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the Node socket.io-client tests need node and npm on PATH")
    if not (candidate / "node_modules" / "socket.io-client").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(candidate)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return candidate


class NodeSocketClient:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.received: list[tuple[str, Any]] = []
        self.acks: dict[int, Any] = {}
        self.transport: str | None = None
        self.refusal: Any = None
        self.disconnected: str | None = None
        self._ids = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> NodeSocketClient:
        folder = node_client_dir()
        process = await asyncio.create_subprocess_exec(
            "node",
            str(folder / "driver.mjs"),
            cwd=folder,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            report = json.loads(line)
            kind = report["type"]
            if kind == "connected":
                self.transport = report["transport"]
            elif kind == "connect_error":
                self.refusal = {"message": report["message"], "data": report["data"]}
            elif kind == "event":
                self.received.append((report["name"], report["data"]))
            elif kind == "ack":
                self.acks[report["id"]] = report["data"]
            elif kind == "disconnected":
                self.disconnected = report["reason"]
            self._changed.set()

    async def _send(self, command: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()

    async def _until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found is not None:
                return found
            if self.process.returncode is not None or self._reader.done():
                stderr = b""
                if self.process.stderr is not None:
                    with contextlib.suppress(Exception):
                        stderr = await asyncio.wait_for(self.process.stderr.read(), 1)
                raise AssertionError(f"the node client stopped: {stderr.decode()[-2000:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"node client: no {what} within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def connect(
        self,
        url: str,
        token: str,
        *,
        transports: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> str:
        """Connect; the transport in use (raises AssertionError with the refusal when refused)."""
        await self._send(
            {
                "op": "connect",
                "url": url,
                "token": token,
                "transports": transports or ["websocket"],
                "headers": dict(headers or {}),
            }
        )
        outcome = await self._until(
            lambda: self.transport or (self.refusal and "refused"), timeout, "connection"
        )
        if outcome == "refused":
            raise AssertionError(f"connection refused: {self.refusal}")
        return str(outcome)

    async def call(self, event: str, data: Any, *, timeout: float = 15.0) -> Any:
        self._ids += 1
        ack_id = self._ids
        await self._send({"op": "emit", "id": ack_id, "event": event, "data": data})
        return await self._until(
            lambda: self.acks.get(ack_id) if ack_id in self.acks else None, timeout, "ack"
        )

    def events(self, name: str) -> list[Any]:
        return [data for event, data in self.received if event == name]

    async def wait_for(
        self, name: str, predicate: Callable[[Any], bool] = lambda _: True, *, timeout: float = 15.0
    ) -> Any:
        def match() -> Any:
            for data in self.events(name):
                if predicate(data):
                    return data
            return None

        return await self._until(match, timeout, f"{name!r} event")

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self._send({"op": "disconnect"})
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

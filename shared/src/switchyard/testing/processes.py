"""A service as its own process: for the benchmarks (so the load generator, the gateway, the
service and the store spread over the cores as they would in a deployment) and for chaos
tests (SIGKILL, then a new process on the same port)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class ServiceProcess:
    """``python <argv>`` with ``env`` added, output to ``log``; waits for a URL, stops, reads
    its CPU time and RSS from /proc."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, *argv], env={**os.environ, **env}, stdout=sink, stderr=sink
            )
        self.log = log

    async def ready(self, url: str, timeout: float = 90) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(self.log.read_text()[-2000:])
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(url)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        """SIGKILL (no shutdown hook runs), and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # the process this object started
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

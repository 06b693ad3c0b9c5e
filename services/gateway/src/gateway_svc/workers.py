"""Running the gateway: one event loop per worker process, workers sharing the
port through SO_REUSEPORT, a small supervisor that restarts a crashed worker.

State the workers share is created before they fork: the host-local rate-limit
table (shared memory), the directory of metrics snapshots and the admin listener's
socket (GATEWAY_ADMIN_PORT: one listener; the worker that accepts a scrape answers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from gateway_svc.adapters.limiter_store import LocalStore
from gateway_svc.app import create_app, listen_socket
from gateway_svc.settings import GatewaySettings

log = logging.getLogger("gateway.workers")

CRASH_WINDOW = 2.0  # a worker dying this soon after start counts as a crash loop
MAX_FAST_CRASHES = 5


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        log.warning("uvloop unavailable; the gateway runs on the default event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(
    settings: GatewaySettings,
    limiter: LocalStore,
    metrics_dir: Path | None,
    admin_sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests and exit."""
    _event_loop_policy()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        gateway = create_app(settings, local_limiter=limiter, metrics_dir=metrics_dir)
        sock = listen_socket(settings.host, settings.port, reuse_port=settings.workers > 1)
        await gateway.start(sock, admin_sock)
        # Everything built so far lives as long as the process: keep it out of the
        # collector's scans, and collect the young generation less often (the hot
        # path's objects are freed by reference counting; cycles are rare).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        await stop.wait()
        log.info("gateway worker stopping", extra={"pid": os.getpid()})
        await gateway.stop()

    asyncio.run(main())


def serve(settings: GatewaySettings) -> None:
    if settings.workers == 1:
        run_worker(settings, LocalStore(settings.rate_limit_local_slots), None)
        return
    # Fail fast (and clearly) if the port is taken, instead of a crash loop of workers.
    listen_socket(settings.host, settings.port, reuse_port=True).close()
    # One admin listener, made before the workers fork and shared by them: whichever
    # worker accepts a scrape answers it with every worker's counters (metrics snapshots).
    admin_sock = listen_socket(settings.admin_host, settings.admin_port)
    limiter = LocalStore(settings.rate_limit_local_slots, shared=True)
    metrics_dir = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    Supervisor(settings, limiter, metrics_dir, admin_sock).run()


class Supervisor:
    def __init__(
        self,
        settings: GatewaySettings,
        limiter: LocalStore,
        metrics_dir: Path,
        admin_sock: socket.socket,
    ) -> None:
        self.settings = settings
        self.admin_sock = admin_sock
        self.limiter = limiter
        self.metrics_dir = metrics_dir
        self.children: dict[int, float] = {}
        self.stopping = False
        self.fast_crashes = 0

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_worker(self.settings, self.limiter, self.metrics_dir, self.admin_sock)
                code = 0
            except BaseException:  # a worker must never return into the supervisor's code
                log.exception("gateway worker failed")
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = time.monotonic()

    def _forward(self, signum: int, frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for _ in range(self.settings.workers):
            self._spawn()
        log.info(
            "gateway started",
            extra={
                "workers": self.settings.workers,
                "port": self.settings.port,
                "pids": list(self.children),
            },
        )
        try:
            while self.children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                started = self.children.pop(pid, None)
                if started is None or self.stopping:
                    continue
                code = os.waitstatus_to_exitcode(status)
                log.error(
                    "gateway worker exited; starting another", extra={"pid": pid, "code": code}
                )
                if time.monotonic() - started < CRASH_WINDOW:
                    self.fast_crashes += 1
                    if self.fast_crashes >= MAX_FAST_CRASHES:
                        log.error("gateway workers keep crashing at start; giving up")
                        self._forward(signal.SIGTERM, None)
                        continue
                    time.sleep(1.0)
                self._spawn()
        finally:
            self.limiter.close()
            self.admin_sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

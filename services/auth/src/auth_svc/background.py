"""Work done after the answer: the code requests that answer 202 whatever the account.

Looking the account up and issuing its code takes store round trips that an unknown address
does not need, and the time they take told known addresses from unknown ones. The endpoint
answers first and hands the work here; the client sees the same path either way.

Bounded: at most ``limit`` jobs wait or run; past that a job is dropped and counted (the
client already has its 202 and may ask again). Jobs still running at shutdown get
``grace`` seconds, then are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("auth.background")

Job = Callable[[], Awaitable[None]]


class BackgroundWork:
    def __init__(self, *, limit: int, on_dropped: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self._on_dropped = on_dropped
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, name: str, job: Job) -> bool:
        """Run ``job`` soon; False (and counted) when too much work is already waiting."""
        if len(self._tasks) >= self.limit:
            self._on_dropped()
            log.warning("background work dropped: too much is waiting", extra={"job": name})
            return False
        task = asyncio.get_running_loop().create_task(self._run(name, job), name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        return True

    async def _run(self, name: str, job: Job) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - nobody awaits this task: log it, with its trace
            log.exception("background work failed", extra={"job": name})

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until nothing is waiting or running (tests, shutdown)."""
        await self._idle.wait()

    async def close(self, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_idle(), grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

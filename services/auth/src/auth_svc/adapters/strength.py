"""The password-strength check (zxcvbn) in worker processes, never on the event loop.

zxcvbn is pure Python: in a thread it holds the GIL, and the loop thread waits for it at
every switch (5 ms each, measured: 5 ms median and 20–60 ms worst loop lag with one or two
checking threads). Worker processes share nothing with the loop: measured lag stays near
0.1 ms while four pathological checks run. The pool is small (``workers``, default 1) and
the queue in front of it bounded (``max_waiting``): past it a check is refused with
:class:`StrengthCheckBusy` (503) instead of piling up.

The processes come from the ``forkserver`` start method: forking the running service (its
threads, its sockets) is unsafe, and the fork server is a clean process that forks cheaply.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from auth_svc.domain.errors import ServiceBusy
from auth_svc.domain.passwords import PasswordPolicy, PasswordRejected, strength_problem

log = logging.getLogger("auth.strength")


class StrengthCheckBusy(ServiceBusy):
    """More checks are waiting than the service will queue; try again shortly."""


class StrengthChecker:
    def __init__(
        self,
        policy: PasswordPolicy,
        *,
        workers: int = 1,
        max_waiting: int = 16,
    ) -> None:
        self.policy = policy
        self.workers = workers
        self.max_waiting = max_waiting
        self._in_flight = 0
        self._pool: ProcessPoolExecutor | None = None
        self._context = multiprocessing.get_context("forkserver")

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._context)
        return self._pool

    async def start(self) -> None:
        """Start the workers now (in a thread: starting a process blocks), not on the first
        sign-up; they import zxcvbn's dictionaries once."""
        pool = self._executor()

        def warm_up() -> None:
            futures = [
                pool.submit(strength_problem, "warm-up-only", (), 0) for _ in range(self.workers)
            ]
            for future in futures:
                future.result()

        await asyncio.to_thread(warm_up)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def check_length(self, password: str) -> None:
        self.policy.check_length(password)

    async def check(self, password: str, *, context: tuple[str, ...] = ()) -> None:
        """The whole policy: raise :class:`PasswordRejected` (or :class:`StrengthCheckBusy`)."""
        self.policy.check_length(password)
        if self._in_flight >= self.max_waiting:
            raise StrengthCheckBusy()
        self._in_flight += 1
        try:
            problem = await self._assess(password, context)
        finally:
            self._in_flight -= 1
        if problem is not None:
            raise PasswordRejected(*problem)

    async def _assess(self, password: str, context: tuple[str, ...]) -> tuple[str, str] | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor(), strength_problem, password, context, self.policy.min_score
            )
        except BrokenProcessPool:
            # A worker died (killed, out of memory): a new pool for the next check, in a
            # thread so the loop does not wait for the processes to start.
            log.error("password-strength worker died; starting a new pool")
            self.close()
            await self.start()
            raise StrengthCheckBusy() from None

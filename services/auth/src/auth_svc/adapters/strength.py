"""The password-strength check (zxcvbn) in worker processes, never on the event loop.

zxcvbn is pure Python: in a thread it holds the GIL, and the loop thread waits for it at
every switch (measured: 5 ms median and 20–60 ms worst loop lag with one or two checking
threads). Worker processes share nothing with the loop (measured lag stays near 0.1 ms
while pathological checks run).

The workers are plain child processes (``python -m auth_svc.strength_worker``) speaking JSON
lines over their stdin and stdout, not a ``multiprocessing`` pool: a pool's workers outlive a
SIGKILLed service (they hold the fork server's pipe open), while these exit as soon as their
stdin closes. The pool is small (``workers``, default 1) and the queue in front of it bounded
(``max_waiting``): past it a check is refused with :class:`StrengthCheckBusy` (503). A worker
that dies or hangs is replaced; the check it was running is refused the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys

from auth_svc.domain.errors import ServiceBusy
from auth_svc.domain.passwords import PasswordPolicy, PasswordRejected

log = logging.getLogger("auth.strength")

# A check takes well under a second (the input is capped); a worker silent this long is stuck.
CHECK_TIMEOUT = 10.0
START_TIMEOUT = 30.0
# How long a check may wait for an idle worker (the queue is bounded by max_waiting).
WAIT_TIMEOUT = 15.0


class StrengthCheckBusy(ServiceBusy):
    """More checks are waiting than the service will queue, or a worker failed; try again."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auth_svc.strength_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(process)
        try:
            ready = await asyncio.wait_for(worker._read(), START_TIMEOUT)
        except BaseException:
            worker.kill()
            raise
        if ready != "ready":
            worker.kill()
            raise RuntimeError("the password-strength worker did not start")
        return worker

    async def _read(self) -> object:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise ConnectionError("the password-strength worker exited")
        return json.loads(line)

    async def check(
        self, password: str, context: tuple[str, ...], min_score: int
    ) -> tuple[str, str] | None:
        assert self.process.stdin is not None
        request = {"password": password, "context": list(context), "min_score": min_score}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        answer = await asyncio.wait_for(self._read(), CHECK_TIMEOUT)
        if not isinstance(answer, dict) or "problem" not in answer:
            raise ConnectionError("the password-strength worker answered nonsense")
        problem = answer["problem"]
        return (str(problem[0]), str(problem[1])) if problem else None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def stop(self, grace: float = 2.0) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the worker's signal to exit
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self.kill()
            await self.process.wait()


class StrengthChecker:
    def __init__(self, policy: PasswordPolicy, *, workers: int = 1, max_waiting: int = 16) -> None:
        self.policy = policy
        self.workers = workers
        self.max_waiting = max_waiting
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._in_flight = 0

    async def start(self) -> None:
        """Start the workers (each loads zxcvbn's dictionaries once)."""
        started = await asyncio.gather(*(_Worker.start() for _ in range(self.workers)))
        for worker in started:
            self._add(worker)

    async def close(self) -> None:
        workers, self._all = list(self._all), set()
        await asyncio.gather(*(worker.stop() for worker in workers))

    def _add(self, worker: _Worker) -> None:
        self._all.add(worker)
        self._idle.put_nowait(worker)

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
        if not self._all:
            await self._replace(None)  # every worker failed to restart: try once more now
            if not self._all:
                raise StrengthCheckBusy()
        try:
            worker = await asyncio.wait_for(self._idle.get(), WAIT_TIMEOUT)
        except TimeoutError:
            raise StrengthCheckBusy() from None
        try:
            problem = await worker.check(password, context, self.policy.min_score)
        except (ConnectionError, TimeoutError, ValueError, OSError) as error:
            log.error("password-strength worker failed; replacing it", extra={"error": repr(error)})
            await self._replace(worker)
            raise StrengthCheckBusy() from None
        except asyncio.CancelledError:
            # Cancelled mid-check: its answer may still come and would be read as the next
            # check's, so this worker is replaced.
            await asyncio.shield(self._replace(worker))
            raise
        self._idle.put_nowait(worker)
        return problem

    async def _replace(self, worker: _Worker | None) -> None:
        """Kill ``worker`` (if any) and start another; on failure the pool is one short
        until the next check tries again."""
        if worker is not None:
            self._all.discard(worker)
            worker.kill()
            await worker.process.wait()
        try:
            self._add(await _Worker.start())
        except (OSError, RuntimeError, TimeoutError, ConnectionError, ValueError) as error:
            log.error("could not start a password-strength worker", extra={"error": repr(error)})

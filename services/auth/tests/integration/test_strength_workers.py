"""The strength-check workers: real child processes, killed and replaced, bounded, and gone
when the service that started them is SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from auth_svc.adapters import strength
from auth_svc.adapters.strength import StrengthCheckBusy, StrengthChecker
from auth_svc.domain.passwords import PasswordPolicy, PasswordRejected

pytestmark = pytest.mark.integration

STRONG = "violet-harbour-47-kettle"
SLOW = "4@8({[<3!1|7+5$0%2694@8({[<3!1|7"  # ~0.3 s of zxcvbn


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def test_a_dead_worker_is_replaced() -> None:
    checker = StrengthChecker(PasswordPolicy(), workers=1)
    await checker.start()
    try:
        await checker.check(STRONG)
        with pytest.raises(PasswordRejected):
            await checker.check("password1234")
        (worker,) = checker._all
        worker.process.kill()
        await worker.process.wait()
        with pytest.raises(StrengthCheckBusy):
            await checker.check(STRONG)
        await checker.check(STRONG)  # a new worker took over
        assert checker._all and worker not in checker._all
    finally:
        await checker.close()


async def test_the_queue_in_front_of_the_workers_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The service's stuck-worker timeouts (10 s a check, 15 s in the queue) passed on a very
    # loaded machine for checks of 0.3 s, and every check came back busy; the subject here is
    # the queue's bound, so they are raised out of the way.
    monkeypatch.setattr(strength, "CHECK_TIMEOUT", 60.0)
    monkeypatch.setattr(strength, "WAIT_TIMEOUT", 60.0)
    checker = StrengthChecker(PasswordPolicy(), workers=1, max_waiting=2)
    await checker.start()
    try:
        results = await asyncio.gather(
            *(checker.check(SLOW) for _ in range(6)), return_exceptions=True
        )
        busy = [r for r in results if isinstance(r, StrengthCheckBusy)]
        done = [r for r in results if r is None]
        assert (len(done), len(busy)) == (2, 4)
    finally:
        await checker.close()


HOLDER = """
import asyncio, sys
from auth_svc.adapters.strength import StrengthChecker
from auth_svc.domain.passwords import PasswordPolicy

async def main():
    checker = StrengthChecker(PasswordPolicy(), workers=2)
    await checker.start()
    print(" ".join(str(w.process.pid) for w in checker._all), flush=True)
    await asyncio.sleep(3600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_do_not_outlive_a_killed_service() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout is not None
        pids = [int(pid) for pid in holder.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 30  # generous: a loaded machine; a quick one exits early
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if alive(pid)], "a worker outlived its service"
    finally:
        if holder.poll() is None:
            holder.kill()

"""One request must not freeze auth (issue 11, item 7).

The password-strength check (zxcvbn) ran on the event loop before anything else, even on
``password/reset`` for unknown emails: one 72-character leet-speak password took 1.5 s of
loop time, and four in parallel made a normal login take 6.1 s.

The lag is measured where it happens: the service, the gateway in front of it and this
test's ticker share one event loop, so any stall of the service's loop shows up as a late
tick (less the time the kernel kept our threads waiting for a CPU: the machine is shared).
The bound (20 ms) is the issue's; a check on the loop costs 170 ms to 800 ms per password
here, so a regression cannot hide under it.

The worst case is measured per callback, not per tick: when the kernel keeps the whole
process off the CPUs for a second or two (three test workers share two cores), the loop
wakes up to a backlog of ordinary callbacks and one tick can come hundreds of milliseconds
late for work that was never one stall (CI measured a tick 2.2 s late, 0.5 s of it spent
running a backlog on the loop). What a frozen service shows is one callback that holds the
loop: each is timed on its own, less the time its thread waited for a CPU. The objects that
exist before the measurement (this test, the gateway and the service share one process:
about 140,000 of them) are frozen out of the garbage collector meanwhile: a full collection
over them took 80-200 ms inside whichever callback triggered it, a cost of the test harness
and not of the requests under test.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from dataclasses import dataclass

import pytest

from .conftest import STRONG_PASSWORD, AuthClient, metric

pytestmark = pytest.mark.integration

# Every character has a leet reading, several have two: zxcvbn tries each substitution
# against every dictionary for every substring (about 0.8 s at 72 characters on this machine).
PATHOLOGICAL = ("4@8({[<3!1|7+5$0%269" * 7)[:128]
TICK = 0.005
MAX_LAG = 0.020


def _own_run_delay(schedstat: int) -> float:
    """Seconds the calling thread has been runnable but not running (``schedstat``, opened
    as ``/proc/thread-self/schedstat`` by that thread)."""
    return int(os.pread(schedstat, 128, 0).split()[1]) / 1e9


def _scheduler_times() -> dict[str, tuple[float, float]]:
    """Per thread of this process, seconds on a CPU and seconds runnable but not running
    (the kernel's ``schedstat``: run time and run_delay)."""
    times = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                ran, waited = stat.read().split()[:2]
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        times[task] = (int(ran) / 1e9, int(waited) / 1e9)
    return times


@dataclass(frozen=True)
class Tick:
    late: float  # how late the tick woke up
    queued: float  # the longest any thread of this process waited for a CPU meanwhile
    ran: float  # the loop thread's time on a CPU meanwhile

    @property
    def stall(self) -> float:
        """How late the tick was for reasons inside this process."""
        return max(0.0, self.late - self.queued)


class LoopLag:
    """A ticker on the running loop: how late each tick woke up, less the time the kernel
    kept a thread of this process waiting for a CPU in that interval.

    On a loaded machine (other test runs share the two cores) a tick can be late because the
    loop thread, or a thread holding the GIL it needs, sat in the run queue: the kernel counts
    that (``schedstat``) and it is not the service's doing. What remains is the stall the
    process caused: work on the loop thread, or the GIL held by a running thread (a
    CPU-bound check in a thread shows here: measured 200-320 ms).
    """

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.worst_callback = (0.0, "")  # (seconds holding the loop, the callback)
        self._loop_thread = str(threading.get_native_id())
        self._task: asyncio.Task[None] | None = None
        self._schedstat = -1
        self._run_handle = asyncio.events.Handle._run

    def _timed_run(self, handle: asyncio.Handle) -> None:
        """``Handle._run`` timed: every callback and task step the loop runs passes here."""
        start, queued = time.perf_counter(), _own_run_delay(self._schedstat)
        try:
            self._run_handle(handle)
        finally:
            held = time.perf_counter() - start - (_own_run_delay(self._schedstat) - queued)
            if held > self.worst_callback[0]:
                self.worst_callback = (held, repr(handle)[:300])

    async def _run(self) -> None:
        due = time.perf_counter() + TICK
        before = _scheduler_times()
        while True:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            now, after = time.perf_counter(), _scheduler_times()
            queued = max((after[t][1] - before.get(t, after[t])[1] for t in after), default=0.0)
            ran = after[self._loop_thread][0] - before[self._loop_thread][0]
            self.ticks.append(Tick(now - due, queued, ran))
            due, before = now + TICK, after

    def quantile(self, q: float) -> float:
        stalls = sorted(tick.stall for tick in self.ticks)
        return stalls[min(len(stalls) - 1, int(q * len(stalls)))]

    def report(self) -> str:
        worst = max(self.ticks, key=lambda tick: tick.stall)
        return (
            f"stalls: median {self.quantile(0.5) * 1000:.1f} ms, 99th percentile "
            f"{self.quantile(0.99) * 1000:.1f} ms, worst {worst.stall * 1000:.1f} ms (a tick "
            f"{worst.late * 1000:.1f} ms late, {worst.queued * 1000:.1f} ms of it waiting for a "
            f"CPU, {worst.ran * 1000:.1f} ms running on the loop); {len(self.ticks)} ticks; "
            f"longest callback {self.worst_callback[0] * 1000:.1f} ms: {self.worst_callback[1]}"
        )

    def __enter__(self) -> LoopLag:
        gc.freeze()
        self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        lag = self

        def timed_run(handle: asyncio.Handle) -> None:
            lag._timed_run(handle)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        asyncio.events.Handle._run = self._run_handle  # type: ignore[method-assign]
        # Closed once the callback running this (timed itself) has finished.
        asyncio.get_running_loop().call_soon(os.close, self._schedstat)
        gc.unfreeze()


async def test_pathological_passwords_do_not_stall_the_event_loop(
    edge: AuthClient, auth: AuthClient
) -> None:
    owner = await edge.signed_up("owner.freeze@example.com")
    checks_before = metric(auth, "auth_password_strength_checks_total")

    async def register(n: int) -> int:
        return (await edge.register(f"leet{n}@example.com", PATHOLOGICAL, "Leet Speaker")).status

    async def reset_unknown(n: int) -> int:
        body = {"email": f"ghost{n}@example.com", "code": "123456", "new_password": PATHOLOGICAL}
        return (await edge.post("/password/reset", body)).status

    async def change() -> int:
        body = {"current_password": STRONG_PASSWORD, "new_password": PATHOLOGICAL}
        reply = await edge.post("/password/change", body, token=owner["access_token"])
        return reply.status

    async def logins() -> None:
        # Ordinary requests in the meantime (four: a fifth failure would lock the account).
        for _ in range(4):
            assert (await edge.login("owner.freeze@example.com", "wrong-password-1")).status == 401

    with LoopLag() as lag:
        registered, resets, changed, _ = await asyncio.gather(
            asyncio.gather(*(register(n) for n in range(4))),
            asyncio.gather(*(reset_unknown(n) for n in range(4))),
            change(),
            logins(),
        )
    # Answered: accepted, or (on a loaded machine, when checks wait too long for the one
    # worker) 503 + Retry-After; never a frozen service.
    assert set(registered) <= {201, 503} and 201 in registered, registered
    assert resets == [400] * 4  # wrong code: the strength check never ran
    assert changed in (200, 503)
    # The bound for 99 ticks in 100, and no callback holding the loop five times over
    # it: with the checks in worker processes the 99th percentile measured 0.7-1.2 ms on a
    # loaded machine, the longest callback 5-20 ms with the harness's objects frozen (80-106
    # ms without: a full garbage collection). On the loop the checks stall it 170-820 ms
    # each; in a thread pool the GIL gives 99th percentiles of 15-175 ms.
    print(lag.report())
    assert lag.quantile(0.99) < MAX_LAG, lag.report()
    assert lag.worst_callback[0] < 5 * MAX_LAG, lag.report()
    assert len(lag.ticks) > 20
    # Five checks (four sign-ups, one change); none for the resets with a wrong code.
    assert metric(auth, "auth_password_strength_checks_total") - checks_before == 5

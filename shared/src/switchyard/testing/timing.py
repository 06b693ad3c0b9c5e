"""Bounding a duration in a test on a shared machine.

A test that says "within 2 s" measures more than the code: CI runs three test workers on two
cores, and the broker, the embedded store and any service subprocess share them, so a
revocation can take 3 s of wall time because every process on its path sat in the kernel's
run queue. :class:`Stopwatch` measures the wall time and how much of it the machine's CPUs
were contended, and checks a bound against the rest.

"Contended" is the kernel's CPU pressure (PSI, ``/proc/pressure/cpu``, ``some``): the time in
which at least one runnable task waited for a CPU. It covers every process on the path (this
test, the broker, the store, a gateway worker), which a per-process count would not. On a
quiet machine it stays near zero and the bound is the product's own; the busier the machine,
the less a wall-clock bound can tell, and a test's deadline (how long it polls before giving
up) stays the backstop. Without PSI (an older kernel) it falls back to the time this process's
threads waited for a CPU (``schedstat``; the longest of them).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PRESSURE = Path("/proc/pressure/cpu")


def _pressure_seconds() -> float | None:
    """Seconds since boot in which some runnable task waited for a CPU, or None."""
    try:
        for line in PRESSURE.read_text().splitlines():
            if line.startswith("some "):
                total = line.rsplit("total=", 1)[1]
                return int(total) / 1e6  # microseconds
    except (OSError, IndexError, ValueError):
        return None
    return None


def _thread_waits() -> dict[str, float]:
    """Per thread of this process: seconds it was runnable but waited for a CPU."""
    waits = {}
    for task in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{task}/schedstat").read_text().split()
            waits[task] = int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile, or no schedstat
    return waits


class Stopwatch:
    """Wall time since :meth:`restart`, and the part of it the CPUs were contended."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._started = time.monotonic()
        self._pressure = _pressure_seconds()
        self._waits = _thread_waits() if self._pressure is None else {}

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def read(self) -> tuple[float, float]:
        """(wall seconds since the start, seconds of it in which a runnable task waited for
        a CPU)."""
        elapsed = time.monotonic() - self._started
        if self._pressure is not None and (now := _pressure_seconds()) is not None:
            return elapsed, min(elapsed, max(0.0, now - self._pressure))
        waits = _thread_waits()
        waited = [waits[task] - before for task, before in self._waits.items() if task in waits]
        return elapsed, min(elapsed, max(waited, default=0.0))

    @property
    def uncontended(self) -> float:
        """The wall time less the contended time: what a bound is checked against."""
        elapsed, contended = self.read()
        return elapsed - contended

    def within(self, seconds: float) -> bool:
        return self.uncontended < seconds

    def report(self) -> str:
        elapsed, contended = self.read()
        return f"{elapsed:.2f} s, of which the CPUs were contended {contended:.2f} s"

"""The bounded pool image work runs in, off the event loop.

Threads, not processes: Pillow releases the GIL while it decodes, resamples and encodes,
so threads use every core for the heavy part, and the work is handed over as file paths
(no pickling of pixels, no forking a process that runs an event loop). At most
``workers`` images are in work at once; later requests wait their turn, so a burst of
uploads costs bounded memory (each image is bounded by ``IMAGE_MAX_PIXELS``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class ImagePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image")
        self._slots = asyncio.Semaphore(workers)

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: work(*args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

"""Keeping a lease alive while the work it protects runs.

Inbox claims, idempotency locks, the outbox relay lease and notification's delivery
claims all follow one pattern: a store document says who holds the work until when;
the holder renews it (guarded on being the holder) while the work runs, so a slow
holder is never mistaken for a dead one, and a dead one's lease runs out.

    async with kept_alive(lambda: claims.renew(key, token), every=lease / 3,
                          on_lost=work.cancel, valid_until=lambda: claims.until):
        await work
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from pymongo.errors import PyMongoError

log = logging.getLogger("switchyard.leases")

Renew = Callable[[], Awaitable[bool]]


@dataclass
class Tenure:
    """What a holder knows about its lease while it works."""

    lost: bool = False


@contextlib.asynccontextmanager
async def kept_alive(
    renew: Renew,
    *,
    every: float,
    what: str,
    on_lost: Callable[[], object] | None = None,
    valid_until: Callable[[], float] | None = None,
) -> AsyncIterator[Tenure]:
    """Call ``renew`` every ``every`` seconds while the block runs.

    ``renew`` returns False when someone else holds the lease now: the tenure is lost
    and ``on_lost`` runs once. A store error is logged and the renewal tried again at
    the next tick; when ``valid_until`` (epoch seconds of the last successful renewal's
    expiry) passes meanwhile, the lease counts as lost too — someone may have taken it.
    """
    tenure = Tenure()

    def lose(why: str) -> None:
        tenure.lost = True
        log.warning("lease lost", extra={"lease": what, "why": why})
        if on_lost is not None:
            on_lost()

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                held = await renew()
            except PyMongoError as error:
                log.warning(
                    "could not renew a lease; trying again",
                    extra={"lease": what, "error": repr(error)},
                )
                if valid_until is not None and time.time() >= valid_until():
                    lose("expired while the store was unreachable")
                    return
                continue
            if not held:
                lose("another holder took it over")
                return

    task = asyncio.create_task(loop(), name=f"renew {what}")
    try:
        yield tenure
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["Renew", "Tenure", "kept_alive"]

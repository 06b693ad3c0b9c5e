"""The sweeper: a background task in every replica that finishes what requests left behind.

Each pass: stale pending transfers are rolled forward (or failed, where their debit was
refused); records whose transition stopped half-way are driven to its end; stored webhook
events that are due are applied; withdrawals waiting for the provider are paid out again;
final transfers' entries are pruned from their accounts; and every
``LEDGER_CHECK_INTERVAL`` the ledger check feeds the imbalance gauges. Every step is safe
to run in many replicas at once and alongside the requests it takes over from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from pymongo.errors import PyMongoError

from payments_svc.adapters.maintenance import LedgerCheck, LedgerReport, Pruner, StaleTransfers
from payments_svc.handlers import webhooks
from payments_svc.handlers.common import Books
from payments_svc.handlers.wallets import pay_out
from switchyard.envelope import utcnow
from switchyard.mongo.dates import time_range

log = logging.getLogger("payments.sweeper")


class Sweeper:
    def __init__(self, books: Books, pruner: Pruner, check: LedgerCheck) -> None:
        self.books = books
        self.pruner = pruner
        self.check = check
        self.stale = StaleTransfers(books.ledger.transfers.database, books.ledger)
        self._task: asyncio.Task[None] | None = None
        self._last_check = 0.0
        self.last_report: LedgerReport | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="payments-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        interval = self.books.settings.ledger_sweep_interval
        while True:
            try:
                await self.sweep_once()
            except PyMongoError as error:
                log.warning("sweeper waiting for the store", extra={"error": repr(error)})
            # A bug in one pass must not stop the sweeping for good; it is logged loudly.
            except Exception:  # noqa: BLE001
                log.exception("sweeper pass failed; retrying")
            await asyncio.sleep(interval)

    async def sweep_once(self, *, check: bool | None = None) -> None:
        books, after = self.books, self.books.settings.ledger_stale_after
        metrics = books.metrics
        metrics.recovered("transfer", len(await self.stale.sweep(after=after)))
        for name, records in (
            ("offer", books.offers),
            ("deposit", books.deposits),
            ("withdrawal", books.withdrawals),
            ("adjustment", books.adjustments),
        ):
            metrics.recovered(name, await records.sweep(after=after))
        metrics.recovered("webhook", await webhooks.apply_due(books=books))
        metrics.recovered("payout", await self.retry_payouts(after=after))
        await self.pruner.prune()
        due = time.monotonic() - self._last_check >= books.settings.ledger_check_interval
        if check if check is not None else due:
            await self.run_check()
        books.published()

    async def retry_payouts(self, *, after: float) -> int:
        cutoff = utcnow() - timedelta(seconds=after)
        waiting = await self.books.withdrawals.collection.find(
            {"status": "requested", "moving": "", **time_range("updated", before=cutoff)}, limit=50
        ).to_list()
        for withdrawal in waiting:
            await pay_out(withdrawal, books=self.books)
        return len(waiting)

    async def run_check(self) -> LedgerReport:
        report = await self.check.run()
        self._last_check = time.monotonic()
        self.last_report = report
        if report.consistent:
            self.books.metrics.ledger_checked(
                {name: totals.with_pending for name, totals in report.currencies.items()},
                len(report.negative_wallets),
                report.pending_transfers,
                report.oldest_pending_seconds,
            )
        if not report.balanced:
            log.error("the ledger does not balance", extra={"report": report.json()})
        return report

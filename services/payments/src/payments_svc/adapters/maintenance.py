"""Keeping the ledger small and proving it balanced: pruning applied entries, rolling stale
transfers forward, and the ledger check.

**Pruning.** An account's ``applied`` map would grow with every transfer it ever saw. Once
a transfer is final (posted or failed) its entries are removed — in one update per
account, guarded by the account's ``pruned`` counter and incrementing it (see
``ledger.py`` for why that makes a late apply impossible). Wallet entries are copied to
``wallet_entries`` (the history) before they go.

**Checking.** The check reads every account (balance and applied entries, each document
consistent in itself) while no pruning pass runs: a pass and a check exclude each other
through one control document (a *hold* the check sets, an *epoch* each pass increments).
A pass prunes both sides of every final transfer it picks (and a pass that died is
finished by the next one), so between passes a transfer is pruned on both sides or on
neither; with pruning paused, a transfer's two entries can
only appear, never vanish, during the scan, so a transfer seen on one side only is exactly the money in flight (or, when only
its credit was seen, a debit applied after its account was read); subtracting those
single-sided entries from the sum of balances gives the total "counting pending", which
is 0 in a correct ledger at every moment. The plain sum is 0 whenever nothing is in
flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from payments_svc.adapters.ledger import (
    ACCOUNTS,
    APPLIED,
    TRANSFERS,
    WALLET_ENTRIES,
    Ledger,
    TransferResult,
    insert_wallet_entry,
    now_us,
    wallet_entry_document,
)
from switchyard.envelope import utcnow
from switchyard.mongo.client import Document
from switchyard.mongo.dates import time_range

log = logging.getLogger("payments.maintenance")

CONTROL = "ledger_control"
_PRUNING = "pruning"
PASS_LEASE_SECONDS = 30.0
# Map keys removed per update: the embedded store silently ignores an $unset of 128 keys
# or more (while applying the $inc beside it), pinned in tests/store.
UNSET_CHUNK = 64
HOLD_SECONDS = 30.0


class LeaseLost(Exception):
    """This pruning pass outlived its lease and another took over: stop touching accounts."""


@dataclass(frozen=True)
class Quiet:
    """The control document as a check found it with no pass running."""

    epoch: int
    clean: bool  # the last pass finished its whole batch


class PruneControl:
    """One document: ``epoch`` (+1 per pruning pass), ``busy_until`` (the running pass's
    lease), ``hold_until`` (no pass starts while a check holds it), ``batch`` (the transfer
    ids the current pass prunes) and ``clean`` (the last pass finished that batch).

    A pass that dies half-way leaves ``clean`` false and its batch recorded: the next pass
    finishes that batch first, so a transfer pruned on one side only never outlives the
    pass after the one that died. Times are integer microseconds: the embedded store keeps
    fewer digits of a float than Python writes, so an equality guard on one misses (pinned
    in ``tests/store``)."""

    def __init__(
        self, db: AsyncDatabase[Document], *, lease_seconds: float = PASS_LEASE_SECONDS
    ) -> None:
        self.collection = db[CONTROL]
        # A pass renews its lease as it goes; one that dies stops pruning for this long.
        self.lease_seconds = lease_seconds
        self._lease_us = int(lease_seconds * 1e6)

    async def ensure(self) -> None:
        await self.collection.update_one(
            {"_id": _PRUNING},
            {
                "$setOnInsert": {
                    "epoch": 0,
                    "busy_until": 0,
                    "hold_until": 0,
                    "batch": [],
                    "clean": True,
                }
            },
            upsert=True,
        )

    async def begin_pass(self) -> tuple[int, list[str]] | None:
        """``(epoch, batch a dead pass left unfinished)``, or None when busy or held."""
        now = now_us()
        before = await self.collection.find_one_and_update(
            {"_id": _PRUNING, "busy_until": {"$lt": now}, "hold_until": {"$lt": now}},
            {"$set": {"busy_until": now + self._lease_us, "clean": False}, "$inc": {"epoch": 1}},
        )
        if before is None:
            return None
        unfinished = [] if before.get("clean", True) else list(before.get("batch") or [])
        return int(before["epoch"]) + 1, unfinished

    async def record_batch(self, epoch: int, batch: list[str]) -> None:
        """Write down what this pass is about to prune (renewing its lease)."""
        result = await self.collection.update_one(
            {"_id": _PRUNING, "epoch": epoch},
            {"$set": {"batch": batch, "busy_until": now_us() + self._lease_us}},
        )
        if result.modified_count != 1:
            raise LeaseLost(epoch)

    async def renew(self, epoch: int) -> None:
        result = await self.collection.update_one(
            {"_id": _PRUNING, "epoch": epoch}, {"$set": {"busy_until": now_us() + self._lease_us}}
        )
        if result.modified_count != 1:
            raise LeaseLost(epoch)

    async def end_pass(self, epoch: int, *, finished: bool) -> None:
        fields: Document = {"busy_until": 0}
        if finished:
            fields.update(clean=True, batch=[])
        await self.collection.update_one({"_id": _PRUNING, "epoch": epoch}, {"$set": fields})

    async def hold(self) -> int:
        until = now_us() + int(HOLD_SECONDS * 1e6)
        await self.collection.update_one({"_id": _PRUNING}, {"$set": {"hold_until": until}})
        return until

    async def release(self, until: int) -> None:
        await self.collection.update_one(
            {"_id": _PRUNING, "hold_until": until}, {"$set": {"hold_until": 0}}
        )

    async def quiet(self) -> Quiet | None:
        """The control document once no pass runs; None when one is still running after
        its lease plus a margin (a check then cannot vouch for its snapshot)."""
        deadline = time.monotonic() + self.lease_seconds + 5
        while True:
            doc = await self.collection.find_one({"_id": _PRUNING})
            if doc is None:
                await self.ensure()
                continue
            if doc["busy_until"] < now_us():
                return Quiet(int(doc["epoch"]), bool(doc.get("clean", True)))
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    async def epoch(self) -> int:
        doc = await self.collection.find_one({"_id": _PRUNING}, {"epoch": 1})
        return int(doc["epoch"]) if doc else 0


class Pruner:
    def __init__(self, db: AsyncDatabase[Document], control: PruneControl) -> None:
        self.accounts = db[ACCOUNTS]
        self.transfers = db[TRANSFERS]
        self.entries = db[WALLET_ENTRIES]
        self.control = control

    async def prune(self, limit: int = 200, batch_size: int = 500) -> int:
        """Remove the entries of final transfers; returns how many went (0 when a check
        holds pruning or another pass runs)."""
        started = await self.control.begin_pass()
        if started is None:
            return 0
        epoch, unfinished = started
        lease = _Lease(self.control, epoch)
        finished = False
        try:
            removed = 0
            if unfinished:  # a pass died half-way: its batch first
                removed += await self._prune_batch(lease, unfinished)
            selected = await self._select(limit, batch_size)
            if selected is not None:
                batch, transfers, accounts = selected
                await self.control.record_batch(epoch, batch)
                lease.renewed()
                removed += await self._prune_batch(lease, batch, transfers, accounts)
            finished = True
            return removed
        finally:
            await self.control.end_pass(epoch, finished=finished)

    async def _select(
        self, limit: int, batch_size: int
    ) -> tuple[list[str], dict[str, Document], list[Document]] | None:
        """Up to ``batch_size`` final transfers with entries still in accounts, with the
        transfers and the accounts as read (handed on, so the pass reads each once)."""
        found = await self.accounts.find(
            {"entries": {"$gt": 0}}, _PRUNE_PROJECTION, limit=limit
        ).to_list()
        ids = sorted({tid for doc in found for tid in (doc.get(APPLIED) or {})})
        if not ids:
            return None
        final = await self.transfers.find(
            {"_id": {"$in": ids}, "state": {"$in": ["posted", "failed"]}}, _TRANSFER_PROJECTION
        ).to_list()
        batch = sorted(doc["_id"] for doc in final)[:batch_size]
        if not batch:
            return None
        chosen = set(batch)
        return batch, {doc["_id"]: doc for doc in final if doc["_id"] in chosen}, found

    async def _prune_batch(
        self,
        lease: _Lease,
        batch: list[str],
        transfers: dict[str, Document] | None = None,
        known: list[Document] | None = None,
    ) -> int:
        """Prune both sides of every transfer in ``batch`` (all final): outside a pass, no
        transfer is pruned on one side only — the ledger check relies on that.

        ``transfers`` and ``known`` (accounts) may come from this pass's selection. An
        account read then lacks no entry a prune removed since (only a pass removes
        entries or moves ``pruned``, and this pass holds the lease), but it may lack one
        of a transfer that was in flight then and final when the transfers were read:
        an account whose read lacks an entry a final transfer in ``batch`` must have
        there (its debit; its credit when posted) is read again, so that transfer is
        pruned on both sides and not on one."""
        final = transfers
        if final is None:
            final = {
                doc["_id"]: doc
                async for doc in self.transfers.find(
                    {"_id": {"$in": batch}, "state": {"$in": ["posted", "failed"]}},
                    _TRANSFER_PROJECTION,
                )
            }
        touched = sorted({doc[side] for doc in final.values() for side in ("debit", "credit")})
        read = {doc["_id"]: doc for doc in known or () if doc["_id"] in touched}
        behind = {
            account
            for tid, transfer in final.items()
            for account in _sides(transfer)
            if account in read and tid not in (read[account].get(APPLIED) or {})
        }
        missing = [account for account in touched if account not in read or account in behind]
        if missing:
            async for doc in self.accounts.find({"_id": {"$in": missing}}, _PRUNE_PROJECTION):
                read[doc["_id"]] = doc
        removed = 0
        for account_id in touched:
            account = read.get(account_id)
            if account is None:
                continue
            applied = account.get(APPLIED) or {}
            done = [tid for tid in applied if tid in final]
            if not done:
                continue
            await lease.keep()  # a pass that lost its lease stops here
            if account.get("sequenced"):
                await self._journal(account_id, applied, done, final)
            pruned = int(account["pruned"])
            for start in range(0, len(done), UNSET_CHUNK):
                chunk = done[start : start + UNSET_CHUNK]
                result = await self.accounts.update_one(
                    {"_id": account_id, "pruned": pruned},
                    {
                        "$unset": {f"{APPLIED}.{tid}": "" for tid in chunk},
                        "$inc": {"pruned": 1, "entries": -len(chunk)},
                    },
                )
                if result.modified_count != 1:
                    # Only a pass that took over from this one changes ``pruned``.
                    raise LeaseLost(lease.epoch)
                pruned += 1
                removed += len(chunk)
        return removed

    async def _journal(
        self,
        account_id: str,
        applied: dict[str, Any],
        done: list[str],
        final: dict[str, Document],
    ) -> None:
        """Write the history lines of the wallet entries about to go that the executor did
        not write (it died first): one read for the lot, an insert only for the missing."""
        lines = [
            wallet_entry_document(
                account_id,
                applied[tid],
                tid,
                final[tid]["kind"],
                final[tid].get("refs") or {},
            )
            for tid in done
            if not applied[tid].get("refused")
        ]
        if not lines:
            return
        present = {
            doc["_id"]
            async for doc in self.entries.find(
                {"_id": {"$in": [line["_id"] for line in lines]}}, {"_id": 1}
            )
        }
        for line in lines:
            if line["_id"] not in present:
                await insert_wallet_entry(self.entries, line)


def _sides(transfer: Document) -> tuple[str, ...]:
    """The accounts a final transfer has an entry on: both when posted; only the debit
    (its refusal) when failed."""
    if transfer["state"] == "posted":
        return (transfer["debit"], transfer["credit"])
    return (transfer["debit"],)


_PRUNE_PROJECTION: Document = {APPLIED: 1, "pruned": 1, "sequenced": 1}
_TRANSFER_PROJECTION: Document = {"state": 1, "kind": 1, "refs": 1, "debit": 1, "credit": 1}


class _Lease:
    """A pass's lease, renewed before an account is touched once a quarter of it has gone
    (not before every account: each renewal is a store write). Until then the pass still
    holds at least three quarters of it, so no other pass can have taken over."""

    def __init__(self, control: PruneControl, epoch: int) -> None:
        self.control = control
        self.epoch = epoch
        self._renew_after = 0.0
        self.renewed()

    def renewed(self) -> None:
        self._renew_after = time.monotonic() + self.control.lease_seconds / 4

    async def keep(self) -> None:
        if time.monotonic() >= self._renew_after:
            await self.control.renew(self.epoch)
            self.renewed()


@dataclass
class CurrencyTotals:
    total: int = 0
    in_flight: int = 0
    with_pending: int = 0

    def json(self) -> dict[str, int]:
        return {"total": self.total, "in_flight": self.in_flight, "with_pending": self.with_pending}


@dataclass
class LedgerReport:
    balanced: bool
    total: int
    negative_wallets: list[str]
    pending_transfers: int
    oldest_pending_seconds: float
    consistent: bool
    currencies: dict[str, CurrencyTotals] = field(default_factory=dict)
    accounts: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "total": self.total,
            "negative_wallets": self.negative_wallets,
            "pending_transfers": self.pending_transfers,
            "oldest_pending_seconds": round(self.oldest_pending_seconds, 3),
            "consistent_snapshot": self.consistent,
            "accounts": self.accounts,
            "currencies": {name: totals.json() for name, totals in self.currencies.items()},
        }


class LedgerCheck:
    def __init__(
        self, db: AsyncDatabase[Document], control: PruneControl, pruner: Pruner | None = None
    ) -> None:
        self.accounts = db[ACCOUNTS]
        self.transfers = db[TRANSFERS]
        self.control = control
        # Finishes a dead pass's batch when the check finds one (else it cannot vouch).
        self.pruner = pruner

    async def run(self, attempts: int = 5) -> LedgerReport:
        report: LedgerReport | None = None
        for _ in range(attempts):
            hold = await self.control.hold()
            try:
                quiet = await self.control.quiet()
                accounts = await self.accounts.find(
                    {},
                    {
                        "balance": 1,
                        "currency": 1,
                        "kind": 1,
                        "never_negative": 1,
                        APPLIED: 1,
                    },
                ).to_list()
                # Consistent: no pass ran during the scan, and the last one finished.
                consistent = (
                    quiet is not None and quiet.clean and await self.control.epoch() == quiet.epoch
                )
            finally:
                await self.control.release(hold)
            pending, oldest = await self._pending()
            report = _report(accounts, pending, oldest, consistent)
            if consistent:
                return report
            if quiet is not None and not quiet.clean and self.pruner is not None:
                await self.pruner.prune()
        assert report is not None
        return report

    async def _pending(self) -> tuple[int, float]:
        count = await self.transfers.count_documents({"state": "pending"})
        oldest = 0.0
        if count:
            first = await self.transfers.find_one(
                {"state": "pending"}, {"created": 1}, sort=[("created.unix_us", 1)]
            )
            if first is not None:
                oldest = max(0.0, (now_us() - int(first["created"]["unix_us"])) / 1e6)
        return count, oldest


def _report(
    accounts: list[Document], pending: int, oldest: float, consistent: bool
) -> LedgerReport:
    currencies: dict[str, CurrencyTotals] = defaultdict(CurrencyTotals)
    sides: dict[str, list[tuple[str, int]]] = defaultdict(list)
    negative: list[str] = []
    for account in accounts:
        currency = account["currency"]
        balance = int(account["balance"])
        currencies[currency].total += balance
        if account.get("never_negative") and balance < 0:
            negative.append(account["_id"])
        for tid, entry in (account.get(APPLIED) or {}).items():
            if not entry.get("refused"):
                sides[tid].append((currency, int(entry["amount"])))
    for entries in sides.values():
        if len(entries) == 1:  # one side seen: money in flight (see the module docstring)
            currency, amount = entries[0]
            currencies[currency].with_pending -= amount
            if amount < 0:
                currencies[currency].in_flight -= amount
    for totals in currencies.values():
        totals.with_pending += totals.total
    balanced = not negative and all(t.with_pending == 0 for t in currencies.values())
    return LedgerReport(
        balanced=balanced,
        total=sum(t.total for t in currencies.values()),
        negative_wallets=sorted(negative),
        pending_transfers=pending,
        oldest_pending_seconds=oldest,
        consistent=consistent,
        currencies=dict(currencies),
        accounts=len(accounts),
    )


class StaleTransfers:
    """Rolls forward transfers left ``pending`` longer than ``after`` seconds."""

    def __init__(self, db: AsyncDatabase[Document], ledger: Ledger) -> None:
        self.transfers = db[TRANSFERS]
        self.ledger = ledger

    async def sweep(self, *, after: float, limit: int = 100) -> list[TransferResult]:
        cutoff = utcnow() - timedelta(seconds=after)
        stale = await self.transfers.find(
            {"state": "pending", **time_range("created", before=cutoff)}, limit=limit
        ).to_list()
        results = []
        for transfer in stale:
            results.append(await self.ledger.resume(transfer))
        return results

    async def count_stale(self, *, after: float) -> int:
        cutoff = utcnow() - timedelta(seconds=after)
        return await self.transfers.count_documents(
            {"state": "pending", **time_range("created", before=cutoff)}
        )

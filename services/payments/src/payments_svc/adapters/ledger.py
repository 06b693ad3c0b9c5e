"""The ledger: accounts and transfers, crash-safe without multi-document transactions.

A transfer moves ``amount`` from a debit account to a credit account in four
single-document writes, each of which may be the last one before a crash:

1. the transfer document is inserted ``pending`` (its ``_id`` is derived from its
   idempotency key, so a second insert of the same transfer is a duplicate-key error);
2. the **debit**: one guarded update of the debit account that changes the balance *and*
   records the transfer id in the account's ``applied`` map — or, when the balance is
   short on a never-negative account, records a *refusal* under that id instead. The map
   entry is the one place where the decision "debited" or "refused" is made; whoever
   comes later (a retry, the sweeper) reads it and follows it;
3. the **credit**, the same way, only after a debit entry exists (never after a refusal);
4. the transfer is marked ``posted`` (or ``failed`` after a refusal).

Every update of an account is guarded by ``applied.<id>`` not existing, so applying one
transfer twice to one account is impossible. Entries are pruned once their transfer is
final (see ``maintenance``); a prune increments the account's ``pruned`` counter, and
every apply is also guarded by the ``pruned`` value read *before* the executor saw the
transfer pending. So an executor that saw the transfer pending, stalled, and woke after
another one posted it and pruned the entry, fails its guard instead of applying again
(the README's invariants section walks through every interleaving).

Wallets keep a running balance for their history: they are updated by compare-and-set on
their entry counter ``seq`` (the entry records ``seq`` and the balance after it) and each
entry is also written to ``wallet_entries``. Other accounts move by a guarded ``$inc``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from payments_svc.domain.accounts import AccountSpec, TransferSpec
from switchyard.envelope import utcnow
from switchyard.mongo import Index, stored_time
from switchyard.mongo.client import Document, asc
from switchyard.mongo.dates import loaded_time

log = logging.getLogger("payments.ledger")

ACCOUNTS = "accounts"
TRANSFERS = "transfers"
WALLET_ENTRIES = "wallet_entries"
APPLIED = "applied"
TransferState = Literal["pending", "posted", "failed"]
Step = Literal["inserted", "debited", "refused", "credited", "posted", "failed"]
T = TypeVar("T")
U = TypeVar("U")
# Guarded updates that lose a race are retried; this many losses in a row is a bug.
_MAX_ATTEMPTS = 10_000


class LedgerError(RuntimeError):
    """Something the ledger's invariants rule out happened: a bug, never retried silently."""


class TransferConflict(LedgerError):
    """The same transfer key names a different movement."""


class _Settled(Exception):
    """The transfer became final while this executor was working on it."""

    def __init__(self, state: TransferState) -> None:
        super().__init__(state)
        self.state: TransferState = state


@dataclass(frozen=True)
class TransferResult:
    id: str
    state: TransferState


class LedgerMetrics(Protocol):
    def transfer_finished(self, kind: str, outcome: str, amount: int, currency: str) -> None: ...


class _NoMetrics:
    def transfer_finished(self, kind: str, outcome: str, amount: int, currency: str) -> None:
        return None


# Called after each step (tests kill the process here); may be async.
StepObserver = Callable[[Step, str], Awaitable[None] | None]


def ledger_indexes() -> list[Index]:
    # A transfer's ``_id`` is derived from its idempotency key (``transfer_id``), so the
    # key is unique through the ``_id`` index; a second index on ``key`` would only cost.
    return [
        Index(TRANSFERS, asc("state", "created.unix_us")),
        Index(ACCOUNTS, asc("entries")),
        Index(ACCOUNTS, asc("owner", "currency")),
        Index(WALLET_ENTRIES, asc("account", "seq")),
    ]


def now_us() -> int:
    return time.time_ns() // 1000


def new_account(spec: AccountSpec) -> Document:
    """The fields a freshly opened account starts with (``$setOnInsert``)."""
    return {
        "kind": spec.kind,
        "currency": spec.currency,
        "owner": spec.owner,
        "never_negative": spec.never_negative,
        "sequenced": spec.sequenced,
        "balance": 0,
        "seq": 0,
        "pruned": 0,
        "entries": 0,
        APPLIED: {},
        "frozen": False,
        "opened": stored_time(utcnow()),
    }


class Ledger:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        metrics: LedgerMetrics | None = None,
        observer: StepObserver | None = None,
    ) -> None:
        self.accounts = db[ACCOUNTS]
        self.transfers = db[TRANSFERS]
        self.entries = db[WALLET_ENTRIES]
        self.metrics = metrics or _NoMetrics()
        self.observer = observer
        # The accounts as this process last read or wrote them, without their entries.
        # Only ever used as a snapshot taken before a transfer is seen pending (I6): a
        # stale one makes the guarded update miss, and the executor re-reads.
        self._known: OrderedDict[str, Document] = OrderedDict()

    # -- accounts ------------------------------------------------------------------

    async def open(self, spec: AccountSpec, *, frozen: bool = False) -> Document | None:
        """Create the account unless it exists (idempotent; never changes an existing one).
        Returns the account as created when this call created it, else None."""
        fields = new_account(spec)
        fields["frozen"] = frozen
        result = await self.accounts.update_one(
            {"_id": spec.id}, {"$setOnInsert": fields}, upsert=True
        )
        return {"_id": spec.id, **fields} if result.upserted_id is not None else None

    async def freeze(self, spec: AccountSpec) -> None:
        """Mark the account frozen, opening it frozen when it does not exist yet (so a late
        lazy open cannot bring back an unfrozen wallet)."""
        fields = new_account(spec)
        fields.pop("frozen")
        await self.accounts.update_one(
            {"_id": spec.id}, {"$setOnInsert": fields, "$set": {"frozen": True}}, upsert=True
        )

    async def balance(self, account_id: str) -> int:
        doc = await self.accounts.find_one({"_id": account_id}, {"balance": 1})
        return int(doc["balance"]) if doc else 0

    async def balances(self, account_ids: Iterable[str]) -> dict[str, int]:
        ids = list(account_ids)
        found = {
            doc["_id"]: int(doc["balance"])
            async for doc in self.accounts.find({"_id": {"$in": ids}}, {"balance": 1})
        }
        return {account: found.get(account, 0) for account in ids}

    # -- transfers -----------------------------------------------------------------

    async def execute(self, spec: TransferSpec) -> TransferResult:
        """Run the transfer to its end (posted or failed), however far it got before.

        Safe to call any number of times, concurrently, from any process: each step is
        a guarded single-document write that happens once.
        """
        tid = spec.id
        # The snapshot (with each account's prune counter) is read BEFORE the transfer is
        # seen pending: that order is what makes a late apply impossible.
        snapshot = await self._snapshot(spec, tid)
        state = await self._observe(spec, tid)
        if state != "pending":
            return TransferResult(tid, state)
        try:
            debit, debit_line = await self._apply(snapshot[spec.debit.id], spec, tid, -1)
            if debit == "refused":
                await self._notify("refused", tid)
                return await self._finish(spec, "failed")
            await self._notify("debited", tid)
            # A wallet's history line is written beside the next step, not before it: the
            # pruner writes any line an executor did not (it reads them before pruning).
            (_, credit_line), _ = await _both(
                self._apply(snapshot[spec.credit.id], spec, tid, +1),
                self._journal(spec.debit.id, debit_line, spec, tid),
            )
            await self._notify("credited", tid)
            posted, _ = await _both(
                self._finish(spec, "posted"),
                self._journal(spec.credit.id, credit_line, spec, tid),
            )
            return posted
        except _Settled as settled:
            return TransferResult(tid, settled.state)

    async def resume(self, transfer: Mapping[str, Any]) -> TransferResult:
        """Roll a stored transfer forward (the sweeper's entry point)."""
        return await self.execute(TransferSpec.from_document(dict(transfer)))

    async def get(self, tid: str) -> Document | None:
        return await self.transfers.find_one({"_id": tid})

    async def _notify(self, step: Step, tid: str) -> None:
        if self.observer is not None:
            outcome = self.observer(step, tid)
            if asyncio.iscoroutine(outcome):
                await outcome

    async def _snapshot(self, spec: TransferSpec, tid: str) -> dict[str, Document]:
        """Both accounts as read before the transfer is seen pending: copies of what this
        process last saw of them (read or written earlier, so before now), or a read.
        No entry for ``tid`` is assumed of a copy; if one exists, the guard misses and
        the executor re-reads and finds it."""
        wanted = {spec.debit.id: spec.debit, spec.credit.id: spec.credit}
        found: dict[str, Document] = {}
        for account_id in wanted:
            known = self._known.get(account_id)
            if known is not None:
                found[account_id] = dict(known)
        # An offer's hold and escrow are opened by the transfer that first credits them:
        # opening first saves reading an account that is not there yet. An account this
        # call created is known exactly as created (before the transfer is seen pending).
        for spec_of in wanted.values():
            if spec_of.id not in found and spec_of.kind in _OPENED_BY_FIRST_CREDIT:
                created = await self.open(spec_of)
                if created is not None:
                    found[spec_of.id] = created
                    self._remember(created)
        unknown = [account_id for account_id in wanted if account_id not in found]
        if unknown:
            projection = _projection(tid)
            async for doc in self.accounts.find({"_id": {"$in": unknown}}, projection):
                found[doc["_id"]] = doc
                self._remember(doc)
        missing = [account for account in wanted.values() if account.id not in found]
        for account in missing:
            opened = await self.open(account)
            if opened is None:
                opened = await self.accounts.find_one({"_id": account.id}, _projection(tid))
            if opened is None:
                raise LedgerError(f"account {account.id} could not be opened")
            found[account.id] = opened
            self._remember(opened)
        return found

    def _remember(self, account: Document) -> None:
        """Keep what is needed of a snapshot (no entries) for later transfers."""
        self._known[account["_id"]] = {field: account.get(field) for field in _SNAPSHOT}
        self._known.move_to_end(account["_id"])
        while len(self._known) > _KNOWN_ACCOUNTS:
            self._known.popitem(last=False)

    async def _observe(self, spec: TransferSpec, tid: str) -> TransferState:
        document = {
            "_id": tid,
            **spec.to_document(),
            "state": "pending",
            "created": stored_time(utcnow()),
        }
        try:
            await self.transfers.insert_one(document)
        except DuplicateKeyError:
            stored = await self.transfers.find_one({"_id": tid})
            if stored is None:
                raise TransferConflict(
                    f"transfer key {spec.key!r} is taken by another id"
                ) from None
            if TransferSpec.from_document(stored).to_document() != spec.to_document():
                raise TransferConflict(
                    f"transfer {tid} ({spec.key!r}) exists with different accounts or amount"
                ) from None
            state: TransferState = stored["state"]
            return state
        await self._notify("inserted", tid)
        return "pending"

    async def _apply(
        self, snapshot: Document, spec: TransferSpec, tid: str, sign: int
    ) -> tuple[Literal["applied", "refused"], Mapping[str, Any] | None]:
        """Apply (or refuse) ``tid`` on the account; with the wallet entry it wrote, whose
        history line the caller writes."""
        account_id = snapshot["_id"]
        pruned = snapshot["pruned"]
        projection = _projection(tid)
        current: Document | None = snapshot
        for _ in range(_MAX_ATTEMPTS):
            if current is None:
                raise LedgerError(f"account {account_id} disappeared")
            entry = applied_entry(current, tid)
            if entry is not None:
                # Applied before (its history line is written again: a duplicate is a no-op).
                if entry.get("refused"):
                    return "refused", None
                return "applied", entry if current.get("sequenced") else None
            if current["pruned"] != pruned:
                # A prune happened since ``pruned`` was read. ``current`` (read just now)
                # was read before the state below: if the transfer is still pending, no
                # prune so far can have removed its entry here, and ``current`` is a
                # valid snapshot to go on from.
                stored = await self.transfers.find_one({"_id": tid}, {"state": 1})
                if stored is None:
                    raise LedgerError(f"transfer {tid} disappeared")
                if stored["state"] != "pending":
                    raise _Settled(stored["state"])
                pruned = current["pruned"]
            guard, update, outcome = _apply_update(current, spec.amount, tid, sign, pruned)
            if outcome == "refused" and sign > 0:
                raise LedgerError("a credit is never refused")
            result = await self.accounts.update_one(guard, update)
            if result.modified_count == 1:
                self._remember(_after(current, update, pruned))
                if outcome == "applied" and current.get("sequenced"):
                    return outcome, update["$set"][f"{APPLIED}.{tid}"]
                return outcome, None
            current = await self.accounts.find_one({"_id": account_id}, projection)
            if current is not None:
                self._remember(current)
        raise LedgerError(f"transfer {tid} could not be applied to {account_id}")

    async def _journal(
        self, account_id: str, entry: Mapping[str, Any] | None, spec: TransferSpec, tid: str
    ) -> None:
        """The wallet's history line (the pruner writes it too, should this process die)."""
        if entry is None:
            return
        await write_wallet_entry(self.entries, account_id, entry, tid, spec.kind, spec.refs)

    async def _finish(self, spec: TransferSpec, state: TransferState) -> TransferResult:
        tid = spec.id
        result = await self.transfers.update_one(
            {"_id": tid, "state": "pending"},
            {"$set": {"state": state, state: stored_time(utcnow())}},
        )
        if result.modified_count == 1:
            self.metrics.transfer_finished(spec.kind, state, spec.amount, spec.currency)
            await self._notify("posted" if state == "posted" else "failed", tid)
            return TransferResult(tid, state)
        stored = await self.transfers.find_one({"_id": tid}, {"state": 1})
        if stored is None or stored["state"] != state:
            raise LedgerError(f"transfer {tid} ended {stored and stored['state']}, not {state}")
        return TransferResult(tid, state)


async def _both(first: Awaitable[T], second: Awaitable[U]) -> tuple[T, U]:
    """Run two steps side by side; both end before an exception of either is raised."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in (a, b):
        if isinstance(outcome, BaseException):
            raise outcome
    return a, b  # type: ignore[return-value]


def applied_entry(account: Mapping[str, Any], tid: str) -> Mapping[str, Any] | None:
    """The account's entry for ``tid`` from a document read with :func:`_projection`.

    MongoDB returns a projected ``applied.<tid>`` nested; the embedded store returns it
    under the dotted name (pinned in ``tests/store``) — both are read here.
    """
    nested = (account.get(APPLIED) or {}).get(tid)
    if nested is not None:
        return nested  # type: ignore[no-any-return]
    return account.get(f"{APPLIED}.{tid}")


_OPENED_BY_FIRST_CREDIT = frozenset({"hold", "escrow"})
# The fields of an account a snapshot needs, and how many accounts a process keeps.
_SNAPSHOT = ("_id", "balance", "seq", "pruned", "never_negative", "sequenced")
_KNOWN_ACCOUNTS = 4096


def _after(account: Document, update: Document, pruned: int) -> Document:
    """The account as ``update`` (just applied to it as read) left it, as far as this
    process knows: exact for a wallet (compare-and-set), a guess for a ``$inc`` account
    that others move concurrently (only ever used behind a guard)."""
    after = dict(account)
    after["pruned"] = pruned
    after.update({k: v for k, v in update.get("$set", {}).items() if k in _SNAPSHOT})
    for field, change in update.get("$inc", {}).items():
        if field in _SNAPSHOT:
            after[field] = int(after.get(field) or 0) + change
    return after


def _projection(tid: str) -> Document:
    return {
        "balance": 1,
        "seq": 1,
        "pruned": 1,
        "never_negative": 1,
        "sequenced": 1,
        f"{APPLIED}.{tid}": 1,
    }


def _apply_update(
    account: Document, amount: int, tid: str, sign: int, pruned: int
) -> tuple[Document, Document, Literal["applied", "refused"]]:
    """The guarded update that applies (or refuses) ``tid`` on ``account`` as last read."""
    guard: Document = {
        "_id": account["_id"],
        "pruned": pruned,
        f"{APPLIED}.{tid}": {"$exists": False},
    }
    at = now_us()
    refusal: Document = {
        "$set": {f"{APPLIED}.{tid}": {"refused": True, "amount": 0}},
        "$inc": {"entries": 1},
    }
    balance = int(account["balance"])
    short = sign < 0 and account.get("never_negative") and balance < amount
    if account.get("sequenced"):
        # Compare-and-set on the entry counter: the entry knows its place and the balance
        # after it, so the wallet's history has exact running balances.
        guard["seq"] = account["seq"]
        if short:
            return guard, refusal, "refused"
        after = balance + sign * amount
        entry = {"amount": sign * amount, "seq": account["seq"] + 1, "after": after, "at": at}
        update = {
            "$set": {"balance": after, f"{APPLIED}.{tid}": entry},
            "$inc": {"seq": 1, "entries": 1},
        }
        return guard, update, "applied"
    if short:
        guard["balance"] = {"$lt": amount}
        return guard, refusal, "refused"
    if sign < 0 and account.get("never_negative"):
        guard["balance"] = {"$gte": amount}
    update = {
        # Small entries: a hot account carries one per transfer until the next prune.
        "$set": {f"{APPLIED}.{tid}": {"amount": sign * amount}},
        "$inc": {"balance": sign * amount, "entries": 1},
    }
    return guard, update, "applied"


def wallet_entry_document(
    account_id: str,
    entry: Mapping[str, Any],
    tid: str,
    kind: str,
    refs: Mapping[str, str],
) -> Document:
    """The history line of a wallet's applied entry (its ``_id`` is the wallet and seq)."""
    seq = int(entry["seq"])
    return {
        "_id": f"{account_id}:{seq:012d}",
        "account": account_id,
        "seq": seq,
        "transfer": tid,
        "amount": int(entry["amount"]),
        "after": int(entry["after"]),
        "kind": kind,
        "refs": dict(refs),
        "at": stored_time(loaded_time({"unix_us": int(entry["at"])})),
    }


async def insert_wallet_entry(entries: Any, line: Document) -> None:
    try:
        await entries.insert_one(line)
    except DuplicateKeyError:
        return  # written already (by the executor or the pruner)


async def write_wallet_entry(
    entries: Any,
    account_id: str,
    entry: Mapping[str, Any],
    tid: str,
    kind: str,
    refs: Mapping[str, str],
) -> None:
    await insert_wallet_entry(entries, wallet_entry_document(account_id, entry, tid, kind, refs))

"""Wallets: balances and history, deposits, withdrawals, payout accounts, admin adjustments
and refunds of deposits."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Literal

from payments_svc.adapters.flows import (
    adjustment_transition,
    deposit_failure,
    deposit_reversal,
    deposit_success,
    withdrawal_transition,
)
from payments_svc.adapters.providers import ProviderError
from payments_svc.adapters.records import Records
from payments_svc.domain import accounts as acct
from payments_svc.domain.money import Money
from payments_svc.handlers.common import (
    Books,
    earlier_record,
    record_id,
    require_currency,
    require_current_admin,
    require_open_wallet,
)
from switchyard.envelope import utcnow
from switchyard.idempotency import Progress
from switchyard.mongo import stored_time
from switchyard.mongo.client import Document
from switchyard.problems import Problem
from switchyard.tokens import Identity

log = logging.getLogger("payments.wallets")


# -- reading ------------------------------------------------------------------------------


async def wallet_view(user_id: str, currency: str, *, books: Books) -> dict[str, Any]:
    """``available`` is the wallet's balance; ``held`` what the user's open offers hold
    (their holds and escrows). Each is one exact read of documents updated atomically."""
    accounts = books.ledger.accounts
    wallet = await accounts.find_one(
        {"_id": acct.wallet(currency, user_id)}, {"balance": 1, "frozen": 1}
    )
    held = await accounts.aggregate(
        [
            {
                "$match": {
                    "owner": user_id,
                    "currency": currency,
                    "kind": {"$in": ["hold", "escrow"]},
                }
            },
            {"$group": {"_id": None, "held": {"$sum": "$balance"}}},
        ]
    )
    rows = await held.to_list()
    return {
        "available": int(wallet["balance"]) if wallet else 0,
        "held": int(rows[0]["held"]) if rows else 0,
        "currency": currency,
        "frozen": bool(wallet and wallet.get("frozen")),
    }


async def wallet_history(
    user_id: str, currency: str, *, limit: int, before_seq: int | None, books: Books
) -> tuple[list[Document], int | None]:
    """The wallet's entries newest first, each with the balance after it."""
    query: Document = {"account": acct.wallet(currency, user_id)}
    if before_seq is not None:
        query["seq"] = {"$lt": before_seq}
    entries = await books.ledger.entries.find(query).sort("seq", -1).limit(limit + 1).to_list()
    more = len(entries) > limit
    entries = entries[:limit]
    return entries, (int(entries[-1]["seq"]) if more and entries else None)


# -- deposits -----------------------------------------------------------------------------


PROVIDER_UNAVAILABLE = "provider-unavailable"


async def deposit(
    identity: Identity, amount: Money, *, books: Books, progress: Progress | None = None
) -> Document:
    started = time.perf_counter()
    provider = books.provider
    result = await earlier_record(progress, books.deposits)
    if result is None or result.get("reason") == PROVIDER_UNAVAILABLE:
        # New (or the earlier attempt answered 502 and changed nothing: a new deposit).
        require_currency(books, amount.currency, "/amount/currency")
        await require_open_wallet(books, identity.user_id, amount.currency)
        record: Document = {
            "_id": await record_id(progress, "dp", fresh=result is not None),
            "user_id": identity.user_id,
            "currency": amount.currency,
            "amount": amount.amount,
            "provider": provider.name,
            "refunded_seen": 0,
            "refund_requested": 0,
        }
        if provider.name == "test":
            # Money "arrives" at once: the record starts with its credit claimed, so a
            # crash right after the insert is finished by the sweeper.
            result = await books.deposits.insert_moving(record, deposit_success(record))
        else:
            result = await books.deposits.insert_pending(record, "pending")
    if result.get("moving"):
        result = await books.deposits.drive(result)
    if result["status"] == "pending" and not result.get("intent_id"):
        result = await _start_intent(result, books=books)
    books.published()
    books.metrics.operation_took("deposit", time.perf_counter() - started)
    return result


async def _start_intent(deposit_doc: Document, *, books: Books) -> Document:
    """Ask the provider for the deposit's PaymentIntent (again after a crash: the provider
    call's idempotency key names the deposit, so it is the same intent)."""
    deposit_id = deposit_doc["_id"]
    try:
        started_at = await books.provider.start_deposit(
            deposit_id=deposit_id,
            user_id=deposit_doc["user_id"],
            amount=deposit_doc["amount"],
            currency=deposit_doc["currency"],
        )
    except ProviderError as error:
        log.warning("the provider refused a deposit", extra={"error": repr(error)})
        claimed = await books.deposits.claim(
            deposit_id, deposit_failure(deposit_doc, PROVIDER_UNAVAILABLE)
        )
        if claimed is not None:
            await books.deposits.drive(claimed)
        books.published()
        raise Problem(
            502, "The payment provider could not start the deposit.", slug="provider-error"
        ) from None
    updated = await books.deposits.collection.find_one_and_update(
        {"_id": deposit_id},
        {"$set": {"intent_id": started_at.intent_id, "client_secret": started_at.client_secret}},
        return_document=True,
    )
    return updated if updated is not None else deposit_doc


async def own_record(identity: Identity, records: Records, record_id: str) -> Document:
    record = await records.get(record_id)
    if record is None or (record["user_id"] != identity.user_id and not identity.is_admin):
        raise Problem(404, "Not found.", slug="not-found")
    return record


async def refund_deposit(
    identity: Identity,
    deposit_id: str,
    amount: int | None,
    *,
    books: Books,
    progress: Progress | None = None,
) -> Document:
    """Admin: give a deposit back to the card. The wallet is debited when the provider says
    the refund happened (``charge.refunded``; at once with the test provider).

    Each refund is reserved on the deposit under its own provider key (``refunds.<key>``)
    committed to the request's Idempotency-Key first: a retry after a crash asks the
    provider again with that key (the same refund) instead of refunding a second time."""
    await require_current_admin(books, identity)
    deposit_doc = await books.deposits.get(deposit_id)
    if deposit_doc is None:
        raise Problem(404, "No such deposit.", slug="not-found")
    effect = (progress.effect if progress is not None else None) or {}
    key = effect.get("refund_key")
    reservations = deposit_doc.get("refunds") or {}
    if isinstance(key, str) and key in reservations:
        wanted, requested = int(reservations[key]), int(effect["refund_total"])
    else:
        wanted, requested, key = await _reserve_refund(deposit_doc, amount, books, progress)
    try:
        started = await books.provider.refund_deposit(
            deposit_id=deposit_id,
            intent_id=deposit_doc.get("intent_id"),
            amount=wanted,
            refund_key=key,
        )
    except ProviderError as error:
        # Nothing was refunded: give the amount back to what may still be refunded.
        log.warning("the provider refused a refund", extra={"error": repr(error)})
        await books.deposits.collection.update_one(
            {"_id": deposit_id, f"refunds.{key}": {"$exists": True}},
            {"$unset": {f"refunds.{key}": ""}, "$inc": {"refund_requested": -wanted}},
        )
        raise Problem(
            502, "The payment provider could not refund.", slug="provider-error"
        ) from None
    if started.settled:
        await reverse_deposit(deposit_id, requested, books=books)
    current = await books.deposits.get(deposit_id)
    assert current is not None
    return current


async def _reserve_refund(
    deposit_doc: Document, amount: int | None, books: Books, progress: Progress | None
) -> tuple[int, int, str]:
    """``(amount, cumulative amount requested, provider key)`` of a new refund, reserved."""
    deposit_id = deposit_doc["_id"]
    if deposit_doc["status"] != "succeeded":
        raise Problem(
            409,
            f"The deposit is {deposit_doc['status']}; only a succeeded deposit is refunded.",
            slug="illegal-transition",
            extra={"current_status": deposit_doc["status"]},
        )
    already = int(deposit_doc.get("refund_requested") or 0)
    refundable = int(deposit_doc["amount"]) - already
    wanted = refundable if amount is None else amount
    if wanted <= 0 or wanted > refundable:
        raise Problem(422, f"At most {refundable} can still be refunded.", slug="refund-too-large")
    # The card must not get back money the user already spent or withdrew (the platform
    # would pay it twice): the wallet covers this refund and those not reversed yet. A
    # spend racing this check is still caught by the reversal (flagged, never negative).
    unreversed = max(0, already - int(deposit_doc.get("refunded_seen") or 0))
    wallet = await books.ledger.balance(
        acct.wallet(deposit_doc["currency"], deposit_doc["user_id"])
    )
    if wallet < wanted + unreversed:
        raise Problem(
            422,
            f"The wallet holds {wallet}; refunding {wanted} to the card would pay out money "
            "the user no longer has.",
            slug="refund-exceeds-wallet",
        )
    requested = already + wanted
    key = f"{deposit_id}-{requested}-{secrets.token_hex(4)}"
    if progress is not None:
        await progress.committed(refund_key=key, refund_total=requested)
    reserved = await books.deposits.collection.update_one(
        {"_id": deposit_id, "refund_requested": already},
        {"$set": {"refund_requested": requested, f"refunds.{key}": wanted}},
    )
    if reserved.modified_count != 1:
        raise Problem(409, "Another refund of this deposit is under way; retry.", slug="conflict")
    return wanted, requested, key


async def reverse_deposit(deposit_id: str, refunded_total: int, *, books: Books) -> Document | None:
    """Take ``refunded_total`` (cumulative) back from the wallet, once; a shortfall is
    recorded and flagged. None when the deposit is not settled yet (retry later)."""
    for _ in range(20):
        deposit_doc = await books.deposits.get(deposit_id)
        if deposit_doc is None or deposit_doc["status"] != "succeeded":
            return None
        if refunded_total <= int(deposit_doc.get("refunded_seen") or 0):
            return deposit_doc  # reversed (or flagged) already
        if deposit_doc.get("moving"):
            deposit_doc = await books.deposits.drive(deposit_doc)
            continue
        transition = deposit_reversal(deposit_doc, refunded_total)
        claimed = await books.deposits.claim(
            deposit_id, transition, guard={"refunded_seen": deposit_doc.get("refunded_seen", 0)}
        )
        if claimed is None:
            continue
        result = await books.deposits.drive(claimed)
        if result.get("flagged") and int(result.get("shortfall") or 0) > int(
            deposit_doc.get("shortfall") or 0
        ):
            books.metrics.refund_shortfall()
            log.error(
                "a card refund exceeds what the wallet holds; flagged for an admin",
                extra={"deposit": deposit_id, "refunded_total": refunded_total},
            )
        return result
    raise Problem(409, "The deposit keeps changing; retry.", slug="conflict")


# -- withdrawals --------------------------------------------------------------------------


async def set_payout_account(identity: Identity, account_id: str, *, books: Books) -> Document:
    document = {"_id": identity.user_id, "account_id": account_id, "updated": stored_time(utcnow())}
    await books.payout_accounts.replace_one({"_id": identity.user_id}, document, upsert=True)
    return document


async def withdraw(
    identity: Identity, amount: Money, *, books: Books, progress: Progress | None = None
) -> Document:
    started = time.perf_counter()
    document = await earlier_record(progress, books.withdrawals)
    if document is None:
        require_currency(books, amount.currency, "/amount/currency")
        await require_open_wallet(books, identity.user_id, amount.currency)
        destination = None
        if books.provider.needs_payout_account:
            registered = await books.payout_accounts.find_one({"_id": identity.user_id})
            if registered is None:
                raise Problem(
                    422,
                    "Register a payout account first (PUT /api/v1/payments/payout-account).",
                    slug="no-payout-account",
                )
            destination = registered["account_id"]
        record = {
            "_id": await record_id(progress, "wd"),
            "user_id": identity.user_id,
            "currency": amount.currency,
            "amount": amount.amount,
            "provider": books.provider.name,
            "destination": destination,
        }
        document = await books.withdrawals.insert_moving(
            record, withdrawal_transition(record, "request")
        )
    requested = await books.withdrawals.drive(document)
    books.published()
    if requested["status"] == "rejected":
        raise Problem(
            422, "The wallet holds less than the amount to withdraw.", slug="insufficient-funds"
        )
    # Paid out (or failed back) already: an earlier attempt got that far.
    result = (
        await pay_out(requested, books=books) if requested["status"] == "requested" else requested
    )
    books.metrics.operation_took("withdrawal", time.perf_counter() - started)
    return result


async def pay_out(withdrawal: Document, *, books: Books) -> Document:
    """Ask the provider to pay a requested withdrawal out (again: its key makes it once)."""
    outcome = await books.provider.pay_out(
        withdrawal_id=withdrawal["_id"],
        user_id=withdrawal["user_id"],
        amount=withdrawal["amount"],
        currency=withdrawal["currency"],
        destination=withdrawal.get("destination"),
    )
    if outcome.status == "retry":
        await books.withdrawals.collection.update_one(
            {"_id": withdrawal["_id"], "status": "requested"},
            {"$set": {"updated": stored_time(utcnow())}, "$inc": {"payout_attempts": 1}},
        )
        return withdrawal
    if outcome.status == "completed":
        transition = withdrawal_transition(withdrawal, "complete", payout_id=outcome.payout_id)
    else:
        transition = withdrawal_transition(
            withdrawal, "fail", reason=outcome.reason or "payout-failed"
        )
    claimed = await books.withdrawals.claim(withdrawal["_id"], transition)
    if claimed is None:
        # The sweeper's retry claimed it first: drive its claim alongside it (every step
        # is guarded), so the answer is the outcome, not the in-between ``requested``.
        claimed = await books.withdrawals.get(withdrawal["_id"])
    result = await books.withdrawals.drive(claimed) if claimed else None
    books.published()
    assert result is not None
    return result


# -- adjustments --------------------------------------------------------------------------


async def adjust(
    identity: Identity,
    *,
    user_id: str,
    amount: Money,
    direction: Literal["credit", "debit"],
    reason: str,
    books: Books,
    progress: Progress | None = None,
) -> Document:
    await require_current_admin(books, identity)
    document = await earlier_record(progress, books.adjustments)
    if document is None:
        require_currency(books, amount.currency, "/amount/currency")
        record = {
            "_id": await record_id(progress, "adj"),
            "user_id": user_id,
            "currency": amount.currency,
            "amount": amount.amount,
            "direction": direction,
            "reason": reason,
            "by": identity.user_id,
        }
        document = await books.adjustments.insert_moving(
            record, adjustment_transition(record, actor=identity.user_id)
        )
    result = await books.adjustments.drive(document)
    if result["status"] == "rejected":
        raise Problem(422, "The wallet holds less than the debit.", slug="insufficient-funds")
    return result

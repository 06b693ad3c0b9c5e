"""Stripe webhooks: verified, stored, then applied — once per event id.

The signature is checked by the library (``Stripe-Signature``: ``t=…,v1=…``, HMAC-SHA256 of
``"<t>.<payload>"``, 300 s tolerance) before the body is parsed. The verified event is
stored under its id (a replay is a duplicate key: 200, nothing changes) *before* the 200,
and applied right after; should that fail or the process die, the sweeper applies stored
events later. Applying is idempotent: each effect is a guarded transition of a deposit.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import stripe
from pymongo.errors import DuplicateKeyError

from payments_svc.adapters.flows import deposit_failure, deposit_success
from payments_svc.handlers.common import Books
from payments_svc.handlers.wallets import reverse_deposit
from switchyard.envelope import utcnow
from switchyard.mongo import Index, stored_time
from switchyard.mongo.client import Document, asc
from switchyard.mongo.dates import time_range, time_sort_key
from switchyard.problems import Problem

log = logging.getLogger("payments.webhooks")

WEBHOOK_EVENTS = "webhook_events"
_MAX_BACKOFF = 300.0


class NotYet(Exception):
    """The event refers to something not settled yet (a refund before its payment)."""


def webhook_indexes() -> list[Index]:
    return [Index(WEBHOOK_EVENTS, asc("status", time_sort_key("retry_at")))]


def verify(payload: bytes, signature: str | None, *, books: Books) -> dict[str, Any]:
    secret = books.settings.stripe_webhook_secret
    if secret is None:
        raise Problem(404, "Stripe webhooks are not configured here.", slug="not-found")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature or "",
            secret.get_secret_value(),
            books.settings.stripe_webhook_tolerance,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        books.metrics.signature_failed()
        raise Problem(
            400, "The Stripe-Signature does not verify.", slug="invalid-signature"
        ) from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise Problem(400, "The body is not valid JSON.", slug="malformed-json") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise Problem(400, "The body is not a Stripe event.", slug="malformed-event")
    return event


async def receive(payload: bytes, signature: str | None, *, books: Books) -> bool:
    """Verify and store the event, then try to apply it; False when it was a replay."""
    event = verify(payload, signature, books=books)
    now = utcnow()
    document = {
        "_id": event["id"],
        "type": event["type"],
        "payload": payload.decode("utf-8"),
        "status": "received",
        "attempts": 0,
        "received": stored_time(now),
        "retry_at": stored_time(now + timedelta(seconds=books.settings.ledger_stale_after)),
    }
    try:
        await books.webhook_events.insert_one(document)
    except DuplicateKeyError:
        books.metrics.webhook("replay")
        return False
    try:
        await apply(document, books=books)
    except NotYet:
        await _later(document, books=books)
    except Exception:  # noqa: BLE001 — stored: the sweeper applies it; the provider gets its 200
        log.exception(
            "a stored webhook event could not be applied yet", extra={"event": event["id"]}
        )
        await _later(document, books=books)
    return True


async def _later(document: Document, *, books: Books) -> None:
    attempts = int(document.get("attempts") or 0) + 1
    delay = min(_MAX_BACKOFF, books.settings.ledger_stale_after * 2 ** min(attempts, 10))
    await books.webhook_events.update_one(
        {"_id": document["_id"], "status": "received"},
        {
            "$set": {
                "attempts": attempts,
                "retry_at": stored_time(utcnow() + timedelta(seconds=delay)),
            }
        },
    )


async def apply(document: Document, *, books: Books) -> str:
    """Apply one stored event; returns and records its outcome."""
    event = json.loads(document["payload"])
    kind = event["type"]
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        # Signed, but not the shape Stripe sends: recorded for good, never retried forever.
        log.error("a signed webhook event without a data object", extra={"event": event["id"]})
        outcome = "malformed"
    elif kind == "payment_intent.succeeded":
        outcome = await _intent_succeeded(obj, books=books)
    elif kind == "payment_intent.payment_failed":
        outcome = await _intent_failed(obj, books=books)
    elif kind == "charge.refunded":
        outcome = await _charge_refunded(obj, books=books)
    else:
        outcome = "ignored"  # acknowledged: Stripe sends many types we do not use
    result = await books.webhook_events.update_one(
        {"_id": document["_id"], "status": "received"},
        {"$set": {"status": outcome, "applied": stored_time(utcnow())}},
    )
    if result.modified_count == 1:
        books.metrics.webhook(outcome)
    books.published()
    return outcome


async def _deposit_for_intent(obj: dict[str, Any], *, books: Books) -> Document | None:
    intent_id = obj.get("id")
    metadata = obj.get("metadata")
    deposit_id = metadata.get("deposit_id") if isinstance(metadata, dict) else None
    deposit = await books.deposits.get(deposit_id) if isinstance(deposit_id, str) else None
    if deposit is None and isinstance(intent_id, str):
        deposit = await books.deposits.collection.find_one({"intent_id": intent_id})
    if deposit is None or deposit.get("provider") != "stripe":
        return None
    if deposit.get("intent_id") not in (None, intent_id):
        return None  # the metadata names a deposit paid through another intent
    return deposit


async def _intent_succeeded(obj: dict[str, Any], *, books: Books) -> str:
    deposit = await _deposit_for_intent(obj, books=books)
    if deposit is None:
        log.warning(
            "payment for an unknown intent: recorded, credited to no one",
            extra={"intent": obj.get("id")},
        )
        return "unmatched"
    received = obj.get("amount_received", obj.get("amount"))
    currency = str(obj.get("currency", "")).upper()
    if received != deposit["amount"] or currency != deposit["currency"]:
        log.error("intent amount differs from the deposit", extra={"deposit": deposit["_id"]})
        return "amount-mismatch"
    return await _settle(deposit, "pending", "failed", books=books, success=True)


async def _intent_failed(obj: dict[str, Any], *, books: Books) -> str:
    deposit = await _deposit_for_intent(obj, books=books)
    if deposit is None:
        return "unmatched"
    error = obj.get("last_payment_error")
    error = error if isinstance(error, dict) else {}
    reason = str(error.get("code") or error.get("decline_code") or "payment_failed")
    return await _settle(deposit, "pending", books=books, reason=reason)


async def _settle(
    deposit: Document,
    *starts: str,
    books: Books,
    success: bool = False,
    reason: str = "",
) -> str:
    """Move the deposit from one of ``starts`` to succeeded (or failed with ``reason``);
    a deposit already past them is left as it is (a late or repeated event)."""
    for _ in range(20):
        if deposit.get("moving"):
            deposit = await books.deposits.drive(deposit)
            continue
        status = deposit["status"]
        if status not in starts:
            return "applied"
        transition = (
            deposit_success(deposit, from_status=status)
            if success
            else deposit_failure(deposit, reason)
        )
        claimed = await books.deposits.claim(deposit["_id"], transition)
        if claimed is not None:
            await books.deposits.drive(claimed)
            return "applied"
        deposit = await books.deposits.get(deposit["_id"]) or deposit
    raise NotYet(deposit["_id"])  # it keeps changing: the sweeper applies the event later


async def _charge_refunded(obj: dict[str, Any], *, books: Books) -> str:
    intent_id = obj.get("payment_intent")
    deposit = (
        await books.deposits.collection.find_one({"intent_id": intent_id})
        if isinstance(intent_id, str)
        else None
    )
    refunded = obj.get("amount_refunded")
    if deposit is None or not isinstance(refunded, int) or refunded <= 0:
        return "unmatched"
    if deposit["status"] == "pending":
        raise NotYet(deposit["_id"])
    if deposit["status"] != "succeeded":
        return "unmatched"
    refunded = min(refunded, int(deposit["amount"]))
    result = await reverse_deposit(deposit["_id"], refunded, books=books)
    if result is None:
        raise NotYet(deposit["_id"])
    return "applied"


async def due(*, books: Books, limit: int = 50) -> list[Document]:
    """Stored events not applied yet whose retry time has come."""
    return await books.webhook_events.find(
        {"status": "received", **time_range("retry_at", before=utcnow())}, limit=limit
    ).to_list()


async def apply_due(*, books: Books) -> int:
    applied = 0
    for document in await due(books=books):
        try:
            await apply(document, books=books)
            applied += 1
        except NotYet:
            await _later(document, books=books)
        except Exception:  # noqa: BLE001 — retried with backoff; logged loudly
            log.exception("a stored webhook event failed again", extra={"event": document["_id"]})
            await _later(document, books=books)
    return applied

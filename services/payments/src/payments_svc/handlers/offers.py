"""Offers: make one (B + F into its hold), accept, complete, cancel, refund."""

from __future__ import annotations

import time
from typing import Literal

from payments_svc.adapters.flows import offer_transition
from payments_svc.domain.money import Money, offer_amounts
from payments_svc.domain.offers import (
    Action,
    Caller,
    IllegalTransition,
    NotAllowed,
    Parties,
    authorize,
    check_move,
)
from payments_svc.handlers.common import (
    Books,
    earlier_record,
    record_id,
    require_currency,
    require_open_wallet,
)
from switchyard.idempotency import Progress
from switchyard.mongo.client import Document
from switchyard.problems import Problem, validation_problem
from switchyard.tokens import Identity

VISIBLE_WHILE = ("opening", "created", "accepted", "completed", "cancelled", "refunded")


def conflict(error: IllegalTransition) -> Problem:
    return Problem(
        409,
        str(error),
        slug="illegal-transition",
        extra={"current_status": error.current, "action": error.action},
    )


async def create_offer(
    identity: Identity,
    *,
    contractor_id: str,
    job_id: str,
    budget: Money,
    books: Books,
    progress: Progress | None = None,
) -> Document:
    started = time.perf_counter()
    document = await earlier_record(progress, books.offers)
    if document is None:
        document = await _open_offer(identity, contractor_id, job_id, budget, books, progress)
    offer = await books.offers.drive(document)
    books.published()
    books.metrics.operation_took("offer_create", time.perf_counter() - started)
    if offer["status"] == "rejected":
        raise Problem(
            422,
            "The wallet holds less than the budget plus the platform fee "
            f"({offer['budget'] + offer['platform_fee']}).",
            slug="insufficient-funds",
        )
    return offer


async def _open_offer(
    identity: Identity,
    contractor_id: str,
    job_id: str,
    budget: Money,
    books: Books,
    progress: Progress | None,
) -> Document:
    """Check the offer and write it, its hold claimed (``opening``)."""
    require_currency(books, budget.currency, "/budget/currency")
    customer_id = identity.user_id
    if contractor_id == customer_id:
        raise validation_problem(
            [
                {
                    "location": "/contractor_id",
                    "message": "You cannot make an offer to yourself.",
                    "code": "self-offer",
                }
            ]
        )
    contractor = await books.directory.get(contractor_id)
    if contractor is None or not contractor.has_role("contractor"):
        raise validation_problem(
            [
                {
                    "location": "/contractor_id",
                    "message": "No contractor with this id.",
                    "code": "not-a-contractor",
                }
            ]
        )
    await require_open_wallet(books, customer_id, budget.currency)
    amounts = offer_amounts(
        budget,
        platform_fee_bps=books.settings.platform_fee_bps,
        service_fee_bps=books.settings.service_fee_bps,
    )
    record = {
        "_id": await record_id(progress, "of"),
        "customer_id": customer_id,
        "contractor_id": contractor_id,
        "job_id": job_id,
        "currency": budget.currency,
        "budget": amounts.budget.amount,
        "platform_fee": amounts.platform_fee.amount,
        "service_fee": amounts.service_fee.amount,
        "payout": amounts.payout.amount,
    }
    transition = offer_transition(record, "create", actor=customer_id)
    return await books.offers.insert_moving(record, transition)


async def visible_offer(identity: Identity, offer_id: str, *, books: Books) -> Document:
    """The offer, for its parties and admins; 404 for anyone else (no existence leak)."""
    offer = await books.offers.get(offer_id)
    if (
        offer is None
        or offer["status"] not in VISIBLE_WHILE
        or (
            identity.user_id not in (offer["customer_id"], offer["contractor_id"])
            and not identity.is_admin
        )
    ):
        raise Problem(404, "No such offer.", slug="not-found")
    return offer


async def change_offer(
    identity: Identity,
    offer_id: str,
    action: Action,
    *,
    books: Books,
    reason: str | None = None,
    progress: Progress | None = None,
) -> Document:
    started = time.perf_counter()
    offer = await visible_offer(identity, offer_id, books=books)
    done = _earlier_change(progress, offer, identity)
    if done is not None:  # an earlier attempt under this Idempotency-Key made this change
        result = await books.offers.drive(offer) if offer.get("moving") == done else offer
        books.published()
        return result
    stored = await books.directory.get(identity.user_id)
    caller = Caller(
        user_id=identity.user_id,
        # Both roles as auth last published them, not only what the token claims.
        is_admin=identity.is_admin and stored is not None and stored.has_role("admin"),
        is_contractor=stored is not None and stored.has_role("contractor"),
    )
    parties = Parties(offer["customer_id"], offer["contractor_id"])
    try:
        chosen: Action = authorize(action, caller, parties, offer["status"])
        check_move(chosen, offer["status"], offer.get("moving", ""))
    except NotAllowed as error:
        raise Problem(403, str(error), slug="forbidden") from None
    except IllegalTransition as error:
        raise conflict(error) from None
    transition = offer_transition(offer, chosen, actor=identity.user_id, reason=reason)
    if progress is not None:
        await progress.committed(offer_change=chosen)
    claimed = await books.offers.claim(offer_id, transition)
    if claimed is None:  # another change won the race: say what the offer is now
        now = await books.offers.get(offer_id)
        assert now is not None
        raise conflict(IllegalTransition(chosen, now["status"], now.get("moving", "")))
    result = await books.offers.drive(claimed)
    books.published()
    books.metrics.operation_took(f"offer_{chosen}", time.perf_counter() - started)
    return result


def _earlier_change(progress: Progress | None, offer: Document, identity: Identity) -> str | None:
    """The change an earlier attempt under the same Idempotency-Key committed to and made
    (claimed, or finished, by this caller) before it died: the retry answers with it."""
    change = ((progress.effect if progress is not None else None) or {}).get("offer_change")
    if not isinstance(change, str):
        return None
    if (
        offer.get("moving") == change
        and (offer.get("transition") or {}).get("actor") == identity.user_id
    ):
        return change
    step = (offer.get("history") or {}).get(change) or {}
    return change if step.get("actor") == identity.user_id else None


async def list_offers(
    identity: Identity,
    *,
    role: Literal["customer", "contractor"],
    limit: int,
    before: str | None,
    books: Books,
) -> tuple[list[Document], str | None]:
    """The caller's offers as customer or contractor, newest first."""
    query: Document = {
        f"{role}_id": identity.user_id,
        "status": {"$in": ["created", "accepted", "completed", "cancelled", "refunded"]},
    }
    if before is not None:
        query["_id"] = {"$lt": before}
    items = await books.offers.collection.find(query).sort("_id", -1).limit(limit + 1).to_list()
    more = len(items) > limit
    items = items[:limit]
    return items, (items[-1]["_id"] if more and items else None)

"""What each record's transitions move, and the events they publish (DESIGN §3.1).

Offers: create (wallet → hold, B + F), accept (hold → revenue F, hold → escrow B),
complete (escrow → revenue S, escrow → contractor B − S), cancel (hold → wallet B + F),
refund (escrow → wallet B). Deposits: world → wallet (and back for a card refund).
Withdrawals: wallet → payout-pending, then payout-pending → world (paid out) or back to
the wallet (failed). Adjustments: two transfers through the ``adjustments`` account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from payments_svc.adapters.records import Transition
from payments_svc.domain import accounts as acct
from payments_svc.domain.accounts import AccountSpec, TransferKind, TransferSpec
from payments_svc.domain.offers import MOVES, Action
from switchyard.envelope import Envelope, new_envelope, utcnow
from switchyard.events.payments import (
    DepositFailed,
    DepositSucceeded,
    Money,
    OfferAccepted,
    OfferCancelled,
    OfferCompleted,
    OfferCreated,
    OfferRefunded,
    WithdrawalCompleted,
    WithdrawalFailed,
    WithdrawalRequested,
)
from switchyard.mongo import stored_time

SERVICE = "payments"
Record = Mapping[str, Any]


def _wallet(currency: str, user_id: str) -> AccountSpec:
    return AccountSpec(acct.wallet(currency, user_id), owner=user_id)


def _platform(kind: acct.AccountKind, currency: str) -> AccountSpec:
    return AccountSpec(acct.platform(kind, currency))


def _legs(
    key: str,
    legs: list[tuple[str, AccountSpec, AccountSpec, int, TransferKind]],
    refs: dict[str, str],
) -> list[TransferSpec]:
    """Transfers named ``<key>:<leg>``; legs of zero (a fee that rounds to 0) are left out."""
    return [
        TransferSpec(f"{key}:{leg}", debit, credit, amount, kind, refs)
        for leg, debit, credit, amount, kind in legs
        if amount > 0
    ]


def _money(amount: int, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


# -- offers -------------------------------------------------------------------------------


def offer_transfers(offer: Record, action: Literal["create"] | Action) -> list[TransferSpec]:
    currency, offer_id = offer["currency"], offer["_id"]
    customer, contractor = offer["customer_id"], offer["contractor_id"]
    budget, fee = offer["budget"], offer["platform_fee"]
    service_fee, payout = offer["service_fee"], offer["payout"]
    hold = AccountSpec(acct.hold(currency, offer_id), owner=customer)
    escrow = AccountSpec(acct.escrow(currency, offer_id), owner=customer)
    revenue = _platform("revenue", currency)
    refs = {"offer": offer_id}
    key = f"offer:{offer_id}:{action}"
    if action == "create":
        legs = [("hold", _wallet(currency, customer), hold, budget + fee, "offer_hold")]
    elif action == "accept":
        legs = [
            ("fee", hold, revenue, fee, "offer_fee"),
            ("escrow", hold, escrow, budget, "offer_escrow"),
        ]
    elif action == "complete":
        legs = [
            ("service-fee", escrow, revenue, service_fee, "offer_service_fee"),
            ("payout", escrow, _wallet(currency, contractor), payout, "offer_payout"),
        ]
    elif action == "cancel":
        legs = [("return", hold, _wallet(currency, customer), budget + fee, "offer_cancel")]
    else:
        legs = [("return", escrow, _wallet(currency, customer), budget, "offer_refund")]
    return _legs(key, legs, refs)  # type: ignore[arg-type]


def offer_events(offer: Record, transition: Transition, succeeded: bool) -> list[Envelope]:
    if not succeeded:
        return []  # a rejected offer never existed for anyone else
    currency = offer["currency"]
    common = {
        "offer_id": offer["_id"],
        "customer_id": offer["customer_id"],
        "contractor_id": offer["contractor_id"],
        "job_id": offer["job_id"],
        "budget": _money(offer["budget"], currency),
        "platform_fee": _money(offer["platform_fee"], currency),
    }
    at = transition.at
    status = offer["status"]
    data: Any
    if status == "created":
        data = OfferCreated(**common, created_at=at)
    elif status == "accepted":
        data = OfferAccepted(**common, accepted_at=at)
    elif status == "completed":
        data = OfferCompleted(
            **common,
            service_fee=_money(offer["service_fee"], currency),
            payout=_money(offer["payout"], currency),
            completed_at=at,
        )
    elif status == "cancelled":
        data = OfferCancelled(
            **common,
            refund=_money(offer["budget"] + offer["platform_fee"], currency),
            cancelled_by=transition.actor or "",
            cancelled_at=at,
        )
    elif status == "refunded":
        data = OfferRefunded(
            **common,
            refund=_money(offer["budget"], currency),
            refunded_by=transition.actor or "",
            reason=transition.reason,
            refunded_at=at,
        )
    else:
        return []
    return [new_envelope(data, service=SERVICE, subject=offer["_id"])]


def offer_transition(
    offer: Record,
    action: Literal["create"] | Action,
    *,
    actor: str,
    reason: str | None = None,
) -> Transition:
    if action == "create":
        start, end, refused = "opening", "created", "rejected"
    else:
        start, end = MOVES[action]
        refused = None
    return Transition(
        label=action,
        from_status=start,
        to_status=end,
        transfers=offer_transfers(offer, action),
        refused_status=refused,
        actor=actor,
        reason=reason,
        on_refused={"reason": "insufficient-funds"} if refused else {},
    )


# -- deposits -----------------------------------------------------------------------------


def deposit_success(deposit: Record, *, from_status: str = "pending") -> Transition:
    """The money arrived. From ``failed`` too: a declined card sends a PaymentIntent back to
    ``requires_payment_method``, and the customer may then pay it with another card."""
    currency, user = deposit["currency"], deposit["user_id"]
    return Transition(
        label="succeed",
        from_status=from_status,
        to_status="succeeded",
        transfers=_legs(
            f"deposit:{deposit['_id']}",
            [
                (
                    "credit",
                    _platform("world", currency),
                    _wallet(currency, user),
                    deposit["amount"],
                    "deposit",
                )
            ],
            {"deposit": deposit["_id"]},
        ),
        on_success={"succeeded": stored_time(utcnow()), "reason": None},
    )


def deposit_failure(deposit: Record, reason: str) -> Transition:
    return Transition(
        label="fail",
        from_status="pending",
        to_status="failed",
        reason=reason,
        on_success={"reason": reason, "failed": stored_time(utcnow())},
    )


def deposit_reversal(deposit: Record, refunded_total: int) -> Transition:
    """Take back what the provider refunded to the card, if it is still in the wallet."""
    currency, user = deposit["currency"], deposit["user_id"]
    delta = refunded_total - int(deposit.get("refunded_seen") or 0)
    settled = {"refunded_seen": refunded_total}
    return Transition(
        label=f"reverse-{refunded_total}",
        from_status="succeeded",
        to_status="succeeded",
        refused_status="succeeded",
        transfers=_legs(
            f"deposit:{deposit['_id']}:reverse-{refunded_total}",
            [
                (
                    "debit",
                    _wallet(currency, user),
                    _platform("world", currency),
                    delta,
                    "deposit_reversal",
                )
            ],
            {"deposit": deposit["_id"]},
        ),
        on_success=settled,
        on_success_inc={"reversed": delta},
        # The wallet no longer holds it: recorded and flagged for an admin, nothing moved.
        on_refused={**settled, "flagged": True},
        on_refused_inc={"shortfall": delta},
    )


def deposit_events(deposit: Record, transition: Transition, succeeded: bool) -> list[Envelope]:
    amount = _money(deposit["amount"], deposit["currency"])
    common = {
        "deposit_id": deposit["_id"],
        "user_id": deposit["user_id"],
        "amount": amount,
        "provider": deposit["provider"],
    }
    if transition.label == "succeed":
        data: Any = DepositSucceeded(**common, succeeded_at=transition.at)
    elif transition.label == "fail":
        data = DepositFailed(
            **common, reason=transition.reason or "failed", failed_at=transition.at
        )
    else:
        return []
    return [new_envelope(data, service=SERVICE, subject=deposit["user_id"])]


# -- withdrawals --------------------------------------------------------------------------


def withdrawal_transition(
    withdrawal: Record,
    step: Literal["request", "complete", "fail"],
    *,
    reason: str | None = None,
    payout_id: str | None = None,
) -> Transition:
    currency, user, amount = withdrawal["currency"], withdrawal["user_id"], withdrawal["amount"]
    wallet, payout = _wallet(currency, user), _platform("payout", currency)
    key, refs = f"withdrawal:{withdrawal['_id']}", {"withdrawal": withdrawal["_id"]}
    if step == "request":
        return Transition(
            label="request",
            from_status="opening",
            to_status="requested",
            refused_status="rejected",
            transfers=_legs(key, [("hold", wallet, payout, amount, "withdrawal")], refs),
            on_refused={"reason": "insufficient-funds"},
        )
    if step == "complete":
        return Transition(
            label="complete",
            from_status="requested",
            to_status="completed",
            transfers=_legs(
                key,
                [("payout", payout, _platform("world", currency), amount, "withdrawal_payout")],
                refs,
            ),
            on_success={"payout_id": payout_id, "completed": stored_time(utcnow())},
        )
    return Transition(
        label="fail",
        from_status="requested",
        to_status="failed",
        reason=reason,
        transfers=_legs(key, [("return", payout, wallet, amount, "withdrawal_return")], refs),
        on_success={"reason": reason, "failed": stored_time(utcnow())},
    )


def withdrawal_events(
    withdrawal: Record, transition: Transition, succeeded: bool
) -> list[Envelope]:
    if not succeeded:
        return []
    common = {
        "withdrawal_id": withdrawal["_id"],
        "user_id": withdrawal["user_id"],
        "amount": _money(withdrawal["amount"], withdrawal["currency"]),
        "provider": withdrawal["provider"],
    }
    status = withdrawal["status"]
    if status == "requested":
        data: Any = WithdrawalRequested(**common, requested_at=transition.at)
    elif status == "completed":
        data = WithdrawalCompleted(**common, completed_at=transition.at)
    elif status == "failed":
        data = WithdrawalFailed(
            **common, reason=transition.reason or "failed", failed_at=transition.at
        )
    else:
        return []
    return [new_envelope(data, service=SERVICE, subject=withdrawal["user_id"])]


# -- adjustments --------------------------------------------------------------------------


def adjustment_transition(adjustment: Record, *, actor: str) -> Transition:
    """Credit: world → adjustments → wallet; debit: wallet → adjustments → world. The
    adjustments account nets to zero per adjustment; its transfers are the audit trail."""
    currency, user, amount = adjustment["currency"], adjustment["user_id"], adjustment["amount"]
    wallet = _wallet(currency, user)
    world, adjustments = _platform("world", currency), _platform("adjustments", currency)
    if adjustment["direction"] == "credit":
        legs = [
            ("in", world, adjustments, amount, "adjustment"),
            ("out", adjustments, wallet, amount, "adjustment"),
        ]
    else:
        legs = [
            ("in", wallet, adjustments, amount, "adjustment"),
            ("out", adjustments, world, amount, "adjustment"),
        ]
    return Transition(
        label="apply",
        from_status="opening",
        to_status="applied",
        refused_status="rejected",
        transfers=_legs(f"adjustment:{adjustment['_id']}", legs, {"adjustment": adjustment["_id"]}),  # type: ignore[arg-type]
        actor=actor,
        reason=adjustment["reason"],
        on_refused={"reason_rejected": "insufficient-funds"},
    )


def no_events(record: Record, transition: Transition, succeeded: bool) -> list[Envelope]:
    return []

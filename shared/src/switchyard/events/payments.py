"""Events the payments service publishes (through its outbox).

Money is ``{"amount": <int minor units>, "currency": "<ISO 4217>"}`` (DESIGN §3.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchyard.envelope import event_type, examples

CUSTOMER = "019c3a7e5b2f4d1e8a6b0c9d2e4f6a8b"
CONTRACTOR = "019c3a7f0e1d4c2b8a9f7e6d5c4b3a29"
OFFER_ID = "of_019c3a83c9d04e1f8a2b3c4d5e6f7a8b"
DEPOSIT_ID = "dp_019c3a84d1e24f3a9b4c5d6e7f8a9b0c"
WITHDRAWAL_ID = "wd_019c3a85e3f44a5b8c6d7e8f9a0b1c2d"
Provider = Literal["test", "stripe"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Money(_Data):
    """An amount in integer minor units of an ISO 4217 currency."""

    amount: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


def _usd(amount: int) -> dict[str, object]:
    return {"amount": amount, "currency": "USD"}


# -- deposits -------------------------------------------------------------------------------


class _Deposit(_Data):
    deposit_id: str
    user_id: str
    amount: Money
    provider: Provider


@event_type("payments.deposit.succeeded")
class DepositSucceeded(_Deposit):
    """Money arrived from the provider and was credited to the user's wallet."""

    model_config = examples(
        {
            "deposit_id": DEPOSIT_ID,
            "user_id": CUSTOMER,
            "amount": _usd(20000),
            "provider": "stripe",
            "succeeded_at": "2026-03-01T12:00:00Z",
        }
    )

    succeeded_at: datetime


@event_type("payments.deposit.failed")
class DepositFailed(_Deposit):
    """The provider could not collect the deposit; nothing was credited."""

    model_config = examples(
        {
            "deposit_id": DEPOSIT_ID,
            "user_id": CUSTOMER,
            "amount": _usd(20000),
            "provider": "stripe",
            "reason": "card_declined",
            "failed_at": "2026-03-01T12:00:00Z",
        }
    )

    reason: str
    failed_at: datetime


# -- offers ---------------------------------------------------------------------------------


class _Offer(_Data):
    offer_id: str
    customer_id: str
    contractor_id: str
    job_id: str
    budget: Money
    platform_fee: Money
    service_fee: Money | None = None
    payout: Money | None = None


_OFFER = {
    "offer_id": OFFER_ID,
    "customer_id": CUSTOMER,
    "contractor_id": CONTRACTOR,
    "job_id": "job-2291",
    "budget": _usd(10001),
    "platform_fee": _usd(500),
}


@event_type("payments.offer.created")
class OfferCreated(_Offer):
    """A customer made an offer: budget B plus platform fee F are held from their wallet."""

    model_config = examples({**_OFFER, "created_at": "2026-03-01T12:00:00Z"})

    created_at: datetime


@event_type("payments.offer.accepted")
class OfferAccepted(_Offer):
    """The contractor accepted: F went to platform revenue, B into escrow."""

    model_config = examples({**_OFFER, "accepted_at": "2026-03-01T13:00:00Z"})

    accepted_at: datetime


@event_type("payments.offer.completed")
class OfferCompleted(_Offer):
    """The customer confirmed the work: service fee S to revenue, B − S paid to the contractor."""

    model_config = examples(
        {
            **_OFFER,
            "service_fee": _usd(2000),
            "payout": _usd(8001),
            "completed_at": "2026-03-05T09:00:00Z",
        }
    )

    completed_at: datetime


@event_type("payments.offer.cancelled")
class OfferCancelled(_Offer):
    """The offer was cancelled before acceptance: B + F went back to the customer."""

    model_config = examples(
        {
            **_OFFER,
            "refund": _usd(10501),
            "cancelled_by": CUSTOMER,
            "cancelled_at": "2026-03-01T12:30:00Z",
        }
    )

    refund: Money
    cancelled_by: str
    cancelled_at: datetime


@event_type("payments.offer.refunded")
class OfferRefunded(_Offer):
    """An admin refunded an accepted offer: B went back to the customer, F stays revenue."""

    model_config = examples(
        {
            **_OFFER,
            "refund": _usd(10001),
            "refunded_by": "019c3a86f5a64b7c9d8e9f0a1b2c3d4e",
            "reason": "work not delivered",
            "refunded_at": "2026-03-06T10:00:00Z",
        }
    )

    refund: Money
    refunded_by: str
    reason: str | None = None
    refunded_at: datetime


# -- withdrawals ----------------------------------------------------------------------------


class _Withdrawal(_Data):
    withdrawal_id: str
    user_id: str
    amount: Money
    provider: Provider


@event_type("payments.withdrawal.requested")
class WithdrawalRequested(_Withdrawal):
    """A user asked to be paid out; the amount left their wallet for payout-pending."""

    model_config = examples(
        {
            "withdrawal_id": WITHDRAWAL_ID,
            "user_id": CONTRACTOR,
            "amount": _usd(8001),
            "provider": "stripe",
            "requested_at": "2026-03-05T10:00:00Z",
        }
    )

    requested_at: datetime


@event_type("payments.withdrawal.completed")
class WithdrawalCompleted(_Withdrawal):
    """The provider paid the money out."""

    model_config = examples(
        {
            "withdrawal_id": WITHDRAWAL_ID,
            "user_id": CONTRACTOR,
            "amount": _usd(8001),
            "provider": "stripe",
            "completed_at": "2026-03-05T10:01:00Z",
        }
    )

    completed_at: datetime


@event_type("payments.withdrawal.failed")
class WithdrawalFailed(_Withdrawal):
    """The payout failed; the amount went back to the user's wallet."""

    model_config = examples(
        {
            "withdrawal_id": WITHDRAWAL_ID,
            "user_id": CONTRACTOR,
            "amount": _usd(8001),
            "provider": "stripe",
            "reason": "account_closed",
            "failed_at": "2026-03-05T10:01:00Z",
        }
    )

    reason: str
    failed_at: datetime

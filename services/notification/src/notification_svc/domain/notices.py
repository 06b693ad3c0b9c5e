"""Who hears about a payment or file event, on which channels, with what (template + context).

Each event gives one :class:`Notice` per person it concerns. The short text (push title and
body, in-app title and body) comes from ``templates/short/<template>.j2``; the email from
``templates/email/payment.*.j2`` around the same short text plus the amounts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from notification_svc.domain.preferences import Category, Channel
from switchyard.events.file import FileDeleted, FileUploaded
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

ALL_CHANNELS: tuple[Channel, ...] = ("email", "push", "in_app")
# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "JOD": 3}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def format_money(money: Money) -> str:
    """``{"amount": 10001, "currency": "USD"}`` → ``$100.01``; other currencies ``100.01 CHF``."""
    exponent = _EXPONENTS.get(money.currency, 2)
    whole, part = divmod(money.amount, 10**exponent) if exponent else (money.amount, 0)
    number = f"{whole:,}" + (f".{part:0{exponent}d}" if exponent else "")
    symbol = _SYMBOLS.get(money.currency)
    return f"{symbol}{number}" if symbol else f"{number} {money.currency}"


@dataclass(frozen=True)
class Notice:
    """A message about one event for one user."""

    user_id: str
    category: Category
    template: str  # templates/short/<template>.j2
    context: Mapping[str, Any]
    data: Mapping[str, str]  # deep-link ids for the app
    channels: tuple[Channel, ...] = ALL_CHANNELS
    # Lines of the email (label, value), e.g. ("Budget", "$100.01").
    facts: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _offer_facts(data: Any) -> tuple[tuple[str, str], ...]:
    facts = [("Job", data.job_id), ("Budget", format_money(data.budget))]
    facts.append(("Platform fee", format_money(data.platform_fee)))
    if data.service_fee is not None:
        facts.append(("Service fee", format_money(data.service_fee)))
    if data.payout is not None:
        facts.append(("Payout", format_money(data.payout)))
    return tuple(facts)


def _offer_data(data: Any) -> dict[str, str]:
    return {"kind": "offer", "offer_id": data.offer_id, "job_id": data.job_id}


def _offer(template: str, *who: str) -> Callable[[Any], list[Notice]]:
    def build(data: Any) -> list[Notice]:
        context = {
            "job_id": data.job_id,
            "budget": format_money(data.budget),
            "payout": format_money(data.payout) if data.payout is not None else None,
            "refund": format_money(data.refund) if hasattr(data, "refund") else None,
        }
        people = {"customer": data.customer_id, "contractor": data.contractor_id}
        return [
            Notice(
                user_id=people[role],
                category="payments",
                template=f"{template}_{role}" if len(who) > 1 else template,
                context=context,
                data=_offer_data(data),
                facts=_offer_facts(data),
            )
            for role in who
        ]

    return build


def _money_event(template: str, id_field: str, kind: str) -> Callable[[Any], list[Notice]]:
    def build(data: Any) -> list[Notice]:
        reason = getattr(data, "reason", None)
        facts = [("Amount", format_money(data.amount))]
        if reason:
            facts.append(("Reason", reason))
        return [
            Notice(
                user_id=data.user_id,
                category="payments",
                template=template,
                context={"amount": format_money(data.amount), "reason": reason},
                data={"kind": kind, f"{kind}_id": getattr(data, id_field)},
                facts=tuple(facts),
            )
        ]

    return build


def _file(template: str) -> Callable[[Any], list[Notice]]:
    def build(data: Any) -> list[Notice]:
        return [
            Notice(
                user_id=data.owner_id,
                category="files",
                template=template,
                context={"filename": getattr(data, "filename", None), "purpose": data.purpose},
                data={"kind": "file", "file_id": data.file_id},
                channels=("in_app",),
            )
        ]

    return build


# The one list of payment and file events notified: the ``activity`` subscription is bound to
# exactly these event types (derived from the catalog).
NOTICES_FOR_EVENT: Mapping[type[BaseModel], Callable[[Any], list[Notice]]] = {
    OfferCreated: _offer("offer_created", "contractor"),
    OfferAccepted: _offer("offer_accepted", "customer"),
    OfferCompleted: _offer("offer_completed", "customer", "contractor"),
    OfferCancelled: _offer("offer_cancelled", "customer", "contractor"),
    OfferRefunded: _offer("offer_refunded", "customer", "contractor"),
    DepositSucceeded: _money_event("deposit_succeeded", "deposit_id", "deposit"),
    DepositFailed: _money_event("deposit_failed", "deposit_id", "deposit"),
    WithdrawalRequested: _money_event("withdrawal_requested", "withdrawal_id", "withdrawal"),
    WithdrawalCompleted: _money_event("withdrawal_completed", "withdrawal_id", "withdrawal"),
    WithdrawalFailed: _money_event("withdrawal_failed", "withdrawal_id", "withdrawal"),
    FileUploaded: _file("file_uploaded"),
    FileDeleted: _file("file_deleted"),
}


def notices_for(data: BaseModel) -> list[Notice] | None:
    build = NOTICES_FOR_EVENT.get(type(data))
    return build(data) if build is not None else None

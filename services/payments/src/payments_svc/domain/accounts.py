"""Ledger accounts (modelled on TigerBeetle's accounts and transfers).

An account id says what the account is: ``wallet:USD:<user>``, ``hold:USD:<offer>``,
``escrow:USD:<offer>``, ``revenue:USD``, ``payout:USD``, ``world:USD``,
``adjustments:USD``. Wallets, holds and escrows never go negative; the platform's
accounts may (``world`` is money outside the system, so it is negative by exactly what
users hold).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

AccountKind = Literal["wallet", "hold", "escrow", "revenue", "payout", "world", "adjustments"]
TransferKind = Literal[
    "deposit",
    "deposit_reversal",
    "offer_hold",
    "offer_fee",
    "offer_escrow",
    "offer_service_fee",
    "offer_payout",
    "offer_cancel",
    "offer_refund",
    "withdrawal",
    "withdrawal_payout",
    "withdrawal_return",
    "adjustment",
]
NEVER_NEGATIVE: frozenset[str] = frozenset({"wallet", "hold", "escrow"})
# Wallets keep a running balance per entry (history); they are updated by compare-and-set
# on their entry counter. Every other account moves by a guarded $inc (no contention on the
# platform's hot accounts).
SEQUENCED: frozenset[str] = frozenset({"wallet"})


def wallet(currency: str, user_id: str) -> str:
    return f"wallet:{currency}:{user_id}"


def hold(currency: str, offer_id: str) -> str:
    return f"hold:{currency}:{offer_id}"


def escrow(currency: str, offer_id: str) -> str:
    return f"escrow:{currency}:{offer_id}"


def platform(kind: AccountKind, currency: str) -> str:
    return f"{kind}:{currency}"


def kind_of(account_id: str) -> AccountKind:
    kind = account_id.split(":", 1)[0]
    if kind not in ("wallet", "hold", "escrow", "revenue", "payout", "world", "adjustments"):
        raise ValueError(f"not a ledger account id: {account_id!r}")
    return kind  # type: ignore[return-value]


def currency_of(account_id: str) -> str:
    return account_id.split(":", 2)[1]


@dataclass(frozen=True)
class AccountSpec:
    """What is needed to open an account that does not exist yet."""

    id: str
    owner: str | None = None

    @property
    def kind(self) -> AccountKind:
        return kind_of(self.id)

    @property
    def currency(self) -> str:
        return currency_of(self.id)

    @property
    def never_negative(self) -> bool:
        return self.kind in NEVER_NEGATIVE

    @property
    def sequenced(self) -> bool:
        return self.kind in SEQUENCED


def transfer_id(key: str) -> str:
    """Transfers are named by their idempotency key: the same key is the same transfer."""
    return "tr_" + hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TransferSpec:
    """One movement: ``amount`` from ``debit`` to ``credit`` (same currency, amount > 0)."""

    key: str
    debit: AccountSpec
    credit: AccountSpec
    amount: int
    kind: TransferKind
    refs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise ValueError("a transfer moves a positive integer amount")
        if self.debit.currency != self.credit.currency:
            raise ValueError("no transfer crosses currencies")
        if self.debit.id == self.credit.id:
            raise ValueError("a transfer moves money between two different accounts")

    @property
    def id(self) -> str:
        return transfer_id(self.key)

    @property
    def currency(self) -> str:
        return self.debit.currency

    def to_document(self) -> dict[str, object]:
        return {
            "key": self.key,
            "debit": self.debit.id,
            "credit": self.credit.id,
            "owners": {"debit": self.debit.owner, "credit": self.credit.owner},
            "amount": self.amount,
            "currency": self.currency,
            "kind": self.kind,
            "refs": dict(self.refs),
        }

    @classmethod
    def from_document(cls, doc: dict[str, object]) -> TransferSpec:
        owners = doc.get("owners") or {}
        assert isinstance(owners, dict)
        refs = doc.get("refs") or {}
        assert isinstance(refs, dict)
        return cls(
            key=str(doc["key"]),
            debit=AccountSpec(str(doc["debit"]), owners.get("debit")),
            credit=AccountSpec(str(doc["credit"]), owners.get("credit")),
            amount=int(doc["amount"]),  # type: ignore[call-overload]
            kind=doc["kind"],  # type: ignore[arg-type]
            refs={str(k): str(v) for k, v in refs.items()},
        )

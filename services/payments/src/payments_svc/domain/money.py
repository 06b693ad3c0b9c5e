"""Money in integer minor units, and fees in basis points rounded half-up (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass

BASIS_POINTS = 10_000
# One trillion minor units (ten billion dollars): far above any real payment, far below
# the 64-bit integers both stores keep exactly.
MAX_AMOUNT = 10**12


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies met (no transfer crosses currencies)."""


@dataclass(frozen=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError("money is an integer number of minor units")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        return Money(self.amount + self._same(other).amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount - self._same(other).amount, self.currency)

    def _same(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency} do not mix")
        return other

    def json(self) -> dict[str, object]:
        return {"amount": self.amount, "currency": self.currency}


def fee(amount: int, basis_points: int) -> int:
    """``amount × basis_points / 10 000`` rounded half-up to the minor unit (amount ≥ 0)."""
    if amount < 0 or basis_points < 0:
        raise ValueError("fees are computed on non-negative amounts and rates")
    return (amount * basis_points * 2 + BASIS_POINTS) // (2 * BASIS_POINTS)


@dataclass(frozen=True)
class OfferAmounts:
    """What an offer of budget B moves: F at creation/acceptance, S and B − S at completion."""

    budget: Money
    platform_fee: Money
    service_fee: Money
    payout: Money

    @property
    def held(self) -> Money:
        """B + F: what leaves the customer's wallet into the offer's hold."""
        return self.budget + self.platform_fee


def offer_amounts(budget: Money, *, platform_fee_bps: int, service_fee_bps: int) -> OfferAmounts:
    platform = Money(fee(budget.amount, platform_fee_bps), budget.currency)
    service = Money(fee(budget.amount, service_fee_bps), budget.currency)
    return OfferAmounts(budget, platform, service, budget - service)

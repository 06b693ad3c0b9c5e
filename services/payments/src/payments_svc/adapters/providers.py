"""Payment providers behind one small interface: ``test`` (money arrives and leaves at once;
development only) and ``stripe`` (``adapters/stripe_provider.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

ProviderName = Literal["test", "stripe"]


class ProviderError(Exception):
    """The provider could not be asked, or refused the request."""


@dataclass(frozen=True)
class DepositStarted:
    """``settled``: the money is in now (credit at once); else wait for the provider's webhook."""

    settled: bool
    intent_id: str | None = None
    client_secret: str | None = None


@dataclass(frozen=True)
class PayoutOutcome:
    """``retry``: the provider could not be asked (network, 5xx); the sweeper asks again."""

    status: Literal["completed", "failed", "retry"]
    payout_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RefundStarted:
    """``settled``: reverse the deposit now; else on the provider's ``charge.refunded``."""

    settled: bool
    refund_id: str | None = None


class PaymentProvider(Protocol):
    name: ProviderName
    needs_payout_account: bool

    async def start_deposit(
        self, *, deposit_id: str, user_id: str, amount: int, currency: str
    ) -> DepositStarted: ...

    async def pay_out(
        self,
        *,
        withdrawal_id: str,
        user_id: str,
        amount: int,
        currency: str,
        destination: str | None,
    ) -> PayoutOutcome: ...

    async def refund_deposit(
        self, *, deposit_id: str, intent_id: str | None, amount: int, refund_key: str
    ) -> RefundStarted: ...

    async def close(self) -> None: ...


class TestProvider:
    """Development and tests: deposits credit at once, payouts complete at once."""

    __test__ = False  # not a pytest test class
    name: ProviderName = "test"
    needs_payout_account = False

    async def start_deposit(
        self, *, deposit_id: str, user_id: str, amount: int, currency: str
    ) -> DepositStarted:
        return DepositStarted(settled=True)

    async def pay_out(
        self,
        *,
        withdrawal_id: str,
        user_id: str,
        amount: int,
        currency: str,
        destination: str | None,
    ) -> PayoutOutcome:
        return PayoutOutcome("completed", payout_id=f"test_{withdrawal_id}")

    async def refund_deposit(
        self, *, deposit_id: str, intent_id: str | None, amount: int, refund_key: str
    ) -> RefundStarted:
        return RefundStarted(settled=True, refund_id=f"test_{refund_key}")

    async def close(self) -> None:
        return None

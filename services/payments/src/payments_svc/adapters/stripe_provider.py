"""Stripe through its official library: PaymentIntents for deposits, Connect Transfers for
payouts, Refunds; each call with an idempotency key, so a retry never charges or pays
twice. ``STRIPE_API_BASE`` points the library elsewhere (a local fake in tests)."""

from __future__ import annotations

import logging

import stripe

from payments_svc.adapters.providers import (
    DepositStarted,
    PayoutOutcome,
    ProviderError,
    ProviderName,
    RefundStarted,
)

log = logging.getLogger("payments.stripe")

# Errors that are the request's fault (a closed account, an invalid destination, a
# declined card): retrying cannot help. Anything else (network, rate limit, 5xx) is retried.
_FINAL_ERRORS = (
    stripe.InvalidRequestError,
    stripe.CardError,
    stripe.PermissionError,
    stripe.AuthenticationError,
)


class StripeProvider:
    name: ProviderName = "stripe"
    needs_payout_account = True

    def __init__(self, api_key: str, *, api_base: str, timeout: float = 20.0) -> None:
        self._http = stripe.AIOHTTPClient(timeout=timeout)
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=self._http,
            max_network_retries=2,
        )

    async def start_deposit(
        self, *, deposit_id: str, user_id: str, amount: int, currency: str
    ) -> DepositStarted:
        try:
            intent = await self.client.v1.payment_intents.create_async(
                {
                    "amount": amount,
                    "currency": currency.lower(),
                    "automatic_payment_methods": {"enabled": True},
                    "metadata": {"deposit_id": deposit_id, "user_id": user_id},
                },
                {"idempotency_key": f"deposit-{deposit_id}"},
            )
        except stripe.StripeError as error:
            raise ProviderError(repr(error)) from error
        return DepositStarted(
            settled=False, intent_id=intent.id, client_secret=intent.client_secret
        )

    async def pay_out(
        self,
        *,
        withdrawal_id: str,
        user_id: str,
        amount: int,
        currency: str,
        destination: str | None,
    ) -> PayoutOutcome:
        if not destination:
            return PayoutOutcome("failed", reason="no-payout-account")
        try:
            transfer = await self.client.v1.transfers.create_async(
                {
                    "amount": amount,
                    "currency": currency.lower(),
                    "destination": destination,
                    "metadata": {"withdrawal_id": withdrawal_id, "user_id": user_id},
                },
                {"idempotency_key": f"withdrawal-{withdrawal_id}"},
            )
        except _FINAL_ERRORS as error:
            return PayoutOutcome("failed", reason=error.code or type(error).__name__)
        except stripe.StripeError as error:
            log.warning(
                "payout deferred", extra={"withdrawal": withdrawal_id, "error": repr(error)}
            )
            return PayoutOutcome("retry", reason=type(error).__name__)
        return PayoutOutcome("completed", payout_id=transfer.id)

    async def refund_deposit(
        self, *, deposit_id: str, intent_id: str | None, amount: int, refund_key: str
    ) -> RefundStarted:
        if intent_id is None:
            raise ValueError("a Stripe deposit without a PaymentIntent cannot be refunded")
        try:
            refund = await self.client.v1.refunds.create_async(
                {
                    "payment_intent": intent_id,
                    "amount": amount,
                    "metadata": {"deposit_id": deposit_id},
                },
                {"idempotency_key": f"refund-{refund_key}"},
            )
        except stripe.StripeError as error:
            raise ProviderError(repr(error)) from error
        return RefundStarted(settled=False, refund_id=refund.id)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

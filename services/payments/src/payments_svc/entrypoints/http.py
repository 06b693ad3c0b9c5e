"""HTTP routes under ``/api/v1/payments`` (the gateway forwards the same paths)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from pydantic import Field

from payments_svc import keys
from payments_svc.domain.money import MAX_AMOUNT, Money
from payments_svc.entrypoints.views import (
    adjustment_view,
    deposit_view,
    entry_view,
    offer_view,
    withdrawal_view,
)
from payments_svc.handlers import offers, wallets, webhooks
from payments_svc.handlers.common import require_currency
from payments_svc.handlers.wallets import own_record
from switchyard.authn import current_identity, require_auth, require_roles
from switchyard.idempotency import idempotent, idempotent_request
from switchyard.pagination import PageQuery, invalid_cursor, page, read_cursor
from switchyard.problems import Problem
from switchyard.web import QueryModel, RequestModel, json_response, read_json, read_query

PREFIX = "/api/v1/payments"
_ID = r"{id:[A-Za-z0-9_-]{1,80}}"


class MoneyIn(RequestModel):
    amount: int = Field(gt=0, le=MAX_AMOUNT)
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    def money(self) -> Money:
        return Money(self.amount, self.currency)


class AmountBody(RequestModel):
    amount: MoneyIn


class OfferBody(RequestModel):
    contractor_id: str = Field(min_length=1, max_length=128)
    job_id: str = Field(min_length=1, max_length=128)
    budget: MoneyIn


class ReasonBody(RequestModel):
    reason: str | None = Field(None, min_length=1, max_length=500)


class PayoutAccountBody(RequestModel):
    account_id: str = Field(pattern=r"^acct_[A-Za-z0-9]{1,64}$")


class AdjustmentBody(RequestModel):
    user_id: str = Field(min_length=1, max_length=128)
    amount: MoneyIn
    direction: Literal["credit", "debit"]
    reason: str = Field(min_length=3, max_length=500)


class DepositRefundBody(RequestModel):
    amount: int | None = Field(None, gt=0, le=MAX_AMOUNT)


class WalletQuery(QueryModel):
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")


class HistoryQuery(PageQuery):
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")


class OfferListQuery(PageQuery):
    role: Literal["customer", "contractor"] = "customer"


async def _optional(request: web.Request, model: type[ReasonBody]) -> ReasonBody:
    """An action's optional body: none at all, or the model."""
    if not request.can_read_body:
        return model(reason=None)
    return await read_json(request, model)


def _currency(request: web.Request, wanted: str | None) -> str:
    books = request.app[keys.BOOKS]
    currency = wanted or books.settings.payments_currencies[0]
    require_currency(books, currency, "/currency")
    return currency


# -- wallet -------------------------------------------------------------------------------


@require_auth
async def get_wallet(request: web.Request) -> web.Response:
    query = read_query(request, WalletQuery)
    currency = _currency(request, query.currency)
    identity = current_identity(request)
    view = await wallets.wallet_view(identity.user_id, currency, books=request.app[keys.BOOKS])
    return json_response(view)


@require_auth
async def list_transactions(request: web.Request) -> web.Response:
    query = read_query(request, HistoryQuery)
    currency = _currency(request, query.currency)
    position = read_cursor(query.cursor, before=int)
    if position is not None and position["before"] < 1:
        raise invalid_cursor()
    books = request.app[keys.BOOKS]
    identity = current_identity(request)
    entries, next_before = await wallets.wallet_history(
        identity.user_id,
        currency,
        limit=query.limit,
        before_seq=position["before"] if position else None,
        books=books,
    )
    states = {
        doc["_id"]: doc["state"]
        async for doc in books.ledger.transfers.find(
            {"_id": {"$in": [e["transfer"] for e in entries]}}, {"state": 1}
        )
    }
    items = [entry_view(e, currency, states.get(e["transfer"], "posted")) for e in entries]
    return json_response(page(items, {"before": next_before} if next_before else None))


# -- deposits -----------------------------------------------------------------------------


@require_auth
@idempotent("payments.deposit")
async def create_deposit(request: web.Request) -> web.Response:
    body = await read_json(request, AmountBody)
    books = request.app[keys.BOOKS]
    result = await wallets.deposit(
        current_identity(request),
        body.amount.money(),
        books=books,
        progress=idempotent_request(request),
    )
    return json_response(deposit_view(result, with_secret=True), status=201)


@require_auth
async def get_deposit(request: web.Request) -> web.Response:
    books = request.app[keys.BOOKS]
    identity = current_identity(request)
    record = await own_record(identity, books.deposits, request.match_info["id"])
    return json_response(deposit_view(record, with_secret=record["user_id"] == identity.user_id))


@require_roles("admin")
@idempotent("payments.deposit-refund")
async def refund_deposit(request: web.Request) -> web.Response:
    body = await read_json(request, DepositRefundBody)
    books = request.app[keys.BOOKS]
    result = await wallets.refund_deposit(
        current_identity(request),
        request.match_info["id"],
        body.amount,
        books=books,
        progress=idempotent_request(request),
    )
    return json_response(deposit_view(result), status=202)


# -- offers -------------------------------------------------------------------------------


@require_auth
@idempotent("payments.offer")
async def create_offer(request: web.Request) -> web.Response:
    body = await read_json(request, OfferBody)
    offer = await offers.create_offer(
        current_identity(request),
        contractor_id=body.contractor_id,
        job_id=body.job_id,
        budget=body.budget.money(),
        books=request.app[keys.BOOKS],
        progress=idempotent_request(request),
    )
    return json_response(offer_view(offer), status=201)


@require_auth
async def get_offer(request: web.Request) -> web.Response:
    offer = await offers.visible_offer(
        current_identity(request), request.match_info["id"], books=request.app[keys.BOOKS]
    )
    return json_response(offer_view(offer))


@require_auth
async def list_offers(request: web.Request) -> web.Response:
    query = read_query(request, OfferListQuery)
    position = read_cursor(query.cursor, before=str)
    items, last = await offers.list_offers(
        current_identity(request),
        role=query.role,
        limit=query.limit,
        before=position["before"] if position else None,
        books=request.app[keys.BOOKS],
    )
    return json_response(page([offer_view(i) for i in items], {"before": last} if last else None))


def _offer_action(
    action: Literal["accept", "complete", "cancel", "refund"],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    @require_auth
    @idempotent(f"payments.offer-{action}")
    async def handler(request: web.Request) -> web.Response:
        body = await _optional(request, ReasonBody)
        offer = await offers.change_offer(
            current_identity(request),
            request.match_info["id"],
            action,
            books=request.app[keys.BOOKS],
            reason=body.reason,
            progress=idempotent_request(request),
        )
        return json_response(offer_view(offer))

    handler.__name__ = f"{action}_offer"
    return handler


# -- withdrawals --------------------------------------------------------------------------


@require_auth
async def put_payout_account(request: web.Request) -> web.Response:
    body = await read_json(request, PayoutAccountBody)
    record = await wallets.set_payout_account(
        current_identity(request), body.account_id, books=request.app[keys.BOOKS]
    )
    return json_response({"account_id": record["account_id"]})


@require_auth
async def get_payout_account(request: web.Request) -> web.Response:
    books = request.app[keys.BOOKS]
    record = await books.payout_accounts.find_one({"_id": current_identity(request).user_id})
    if record is None:
        raise Problem(404, "No payout account is registered.", slug="not-found")
    return json_response({"account_id": record["account_id"]})


@require_auth
@idempotent("payments.withdrawal")
async def create_withdrawal(request: web.Request) -> web.Response:
    body = await read_json(request, AmountBody)
    result = await wallets.withdraw(
        current_identity(request),
        body.amount.money(),
        books=request.app[keys.BOOKS],
        progress=idempotent_request(request),
    )
    return json_response(withdrawal_view(result), status=201)


@require_auth
async def get_withdrawal(request: web.Request) -> web.Response:
    books = request.app[keys.BOOKS]
    record = await own_record(
        current_identity(request), books.withdrawals, request.match_info["id"]
    )
    return json_response(withdrawal_view(record))


# -- admin --------------------------------------------------------------------------------


@require_roles("admin")
async def ledger_check(request: web.Request) -> web.Response:
    report = await request.app[keys.SWEEPER].run_check()
    return json_response(report.json())


@require_roles("admin")
@idempotent("payments.adjustment")
async def create_adjustment(request: web.Request) -> web.Response:
    body = await read_json(request, AdjustmentBody)
    result = await wallets.adjust(
        current_identity(request),
        user_id=body.user_id,
        amount=body.amount.money(),
        direction=body.direction,
        reason=body.reason,
        books=request.app[keys.BOOKS],
        progress=idempotent_request(request),
    )
    return json_response(adjustment_view(result), status=201)


# -- provider webhooks (public: the signature is the authentication) ----------------------


async def stripe_webhook(request: web.Request) -> web.Response:
    payload = await request.read()
    fresh = await webhooks.receive(
        payload, request.headers.get("Stripe-Signature"), books=request.app[keys.BOOKS]
    )
    return json_response({"received": True, "replay": not fresh})


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get(f"{PREFIX}/wallet", get_wallet)
    router.add_get(f"{PREFIX}/transactions", list_transactions)
    router.add_post(f"{PREFIX}/deposits", create_deposit)
    router.add_get(f"{PREFIX}/deposits/{_ID}", get_deposit)
    router.add_post(f"{PREFIX}/offers", create_offer)
    router.add_get(f"{PREFIX}/offers", list_offers)
    router.add_get(f"{PREFIX}/offers/{_ID}", get_offer)
    for action in ("accept", "complete", "cancel", "refund"):
        router.add_post(f"{PREFIX}/offers/{_ID}/{action}", _offer_action(action))
    router.add_put(f"{PREFIX}/payout-account", put_payout_account)
    router.add_get(f"{PREFIX}/payout-account", get_payout_account)
    router.add_post(f"{PREFIX}/withdrawals", create_withdrawal)
    router.add_get(f"{PREFIX}/withdrawals/{_ID}", get_withdrawal)
    router.add_get(f"{PREFIX}/admin/ledger/check", ledger_check)
    router.add_post(f"{PREFIX}/admin/adjustments", create_adjustment)
    router.add_post(f"{PREFIX}/admin/deposits/{_ID}/refund", refund_deposit)
    router.add_post(f"{PREFIX}/webhooks/stripe", stripe_webhook)

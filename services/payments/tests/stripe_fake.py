"""A local HTTP server speaking the subset of the Stripe API payments uses — PaymentIntents,
Transfers (Connect payouts), Refunds — driven through the real ``stripe`` library
(``STRIPE_API_BASE`` points at it), and webhooks signed the way Stripe signs them:
``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" with the secret>``."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from switchyard.testing import AppServer


def _nested(form: Any) -> dict[str, Any]:
    """Stripe's form encoding (``metadata[deposit_id]=…``) back into a dictionary."""
    result: dict[str, Any] = {}
    for key, value in form.items():
        parts = key.replace("]", "").split("[")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


def sign(payload: str, secret: str, *, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(
        secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def _error(status: int, kind: str, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"type": kind, "code": code, "message": message}}, status=status
    )


@dataclass
class FakeStripe:
    webhook_secret: str
    api_key: str = "sk_test_fake_0123456789"
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency_keys: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    closed_accounts: set[str] = field(default_factory=set)
    outage: int = 0  # answer this many requests with 500
    server: AppServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def start(self) -> FakeStripe:
        app = web.Application()
        app.router.add_post("/v1/payment_intents", self._create_intent)
        app.router.add_get("/v1/payment_intents/{id}", self._get_intent)
        app.router.add_post("/v1/transfers", self._create_transfer)
        app.router.add_post("/v1/refunds", self._create_refund)
        self.server = await AppServer(app).start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    # -- the API -------------------------------------------------------------------

    async def _read(self, request: web.Request) -> dict[str, Any] | web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(
                401, "invalid_request_error", "api_key_invalid", "Invalid API Key provided"
            )
        params = _nested(await request.post())
        self.requests.append((request.method, request.path, params))
        if self.outage > 0:
            self.outage -= 1
            return _error(500, "api_error", "internal", "Stripe is having a bad day")
        return params

    async def _idempotent(self, request: web.Request, make: Any) -> web.Response:
        params = await self._read(request)
        if isinstance(params, web.Response):
            return params
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idempotency_keys:
            status, body = self.idempotency_keys[key]
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        status, body = make(params)
        if key:
            self.idempotency_keys[key] = (status, body)
        return web.json_response(
            body, status=status, headers={"Request-Id": "req_" + secrets.token_hex(6)}
        )

    async def _create_intent(self, request: web.Request) -> web.Response:
        def make(params: dict[str, Any]) -> tuple[int, Any]:
            intent_id = "pi_" + secrets.token_hex(12)
            intent = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": int(params["amount"]),
                "amount_received": 0,
                "currency": params["currency"],
                "status": "requires_payment_method",
                "client_secret": f"{intent_id}_secret_{secrets.token_hex(8)}",
                "metadata": params.get("metadata", {}),
                "latest_charge": None,
                "livemode": False,
            }
            self.intents[intent_id] = intent
            return 200, intent

        return await self._idempotent(request, make)

    async def _get_intent(self, request: web.Request) -> web.Response:
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return _error(
                404, "invalid_request_error", "resource_missing", "No such payment_intent"
            )
        return web.json_response(intent)

    async def _create_transfer(self, request: web.Request) -> web.Response:
        def make(params: dict[str, Any]) -> tuple[int, Any]:
            destination = params["destination"]
            if destination in self.closed_accounts:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "account_closed",
                        "message": "The destination account is closed.",
                    }
                }
            transfer = {
                "id": "tr_" + secrets.token_hex(12),
                "object": "transfer",
                "amount": int(params["amount"]),
                "currency": params["currency"],
                "destination": destination,
                "metadata": params.get("metadata", {}),
            }
            self.transfers[transfer["id"]] = transfer
            return 200, transfer

        return await self._idempotent(request, make)

    async def _create_refund(self, request: web.Request) -> web.Response:
        def make(params: dict[str, Any]) -> tuple[int, Any]:
            intent = self.intents.get(params["payment_intent"])
            if intent is None or intent["status"] != "succeeded":
                return 400, {
                    "error": {"type": "invalid_request_error", "code": "charge_not_refundable"}
                }
            refund = {
                "id": "re_" + secrets.token_hex(12),
                "object": "refund",
                "amount": int(params["amount"]),
                "payment_intent": intent["id"],
                "charge": intent["latest_charge"],
                "status": "succeeded",
            }
            self.refunds[refund["id"]] = refund
            intent["amount_refunded"] = intent.get("amount_refunded", 0) + refund["amount"]
            return 200, refund

        return await self._idempotent(request, make)

    # -- what Stripe would send ------------------------------------------------------

    def event(self, event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> str:
        return json.dumps(
            {
                "id": event_id or "evt_" + secrets.token_hex(12),
                "object": "event",
                "api_version": "2025-01-27.acacia",
                "created": int(time.time()),
                "livemode": False,
                "type": event_type,
                "data": {"object": obj},
            }
        )

    def succeed(self, intent_id: str) -> str:
        intent = self.intents[intent_id]
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge="ch_" + secrets.token_hex(12),
        )
        return self.event("payment_intent.succeeded", dict(intent))

    def decline(self, intent_id: str, code: str = "card_declined") -> str:
        intent = self.intents[intent_id]
        intent.update(status="requires_payment_method", last_payment_error={"code": code})
        return self.event("payment_intent.payment_failed", dict(intent))

    def charge_refunded(self, intent_id: str) -> str:
        intent = self.intents[intent_id]
        charge = {
            "id": intent["latest_charge"],
            "object": "charge",
            "amount": intent["amount"],
            "amount_refunded": intent.get("amount_refunded", 0),
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "refunded": intent.get("amount_refunded", 0) == intent["amount"],
        }
        return self.event("charge.refunded", charge)

    async def deliver(
        self, url: str, payload: str, *, secret: str | None = None, at: int | None = None
    ) -> tuple[int, Any]:
        headers = {
            "Stripe-Signature": sign(payload, secret or self.webhook_secret, at=at),
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=payload.encode(), headers=headers) as response:
                return response.status, await response.json(content_type=None)

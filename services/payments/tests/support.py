"""Helpers of the payments tests: a running service, users from auth's events, an HTTP
client with tokens, the events the service publishes, and ledger assertions."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from payments_svc import keys
from payments_svc.adapters.maintenance import LedgerReport
from payments_svc.handlers.common import Books
from switchyard.bus import Bus
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserDeleted, UserRegistered, UserUpdated
from switchyard.testing import AppServer, EventTap, JwksServer, eventually, service_bus

PREFIX = "/api/v1/payments"


def user_id() -> str:
    return "usr_" + uuid.uuid4().hex[:16]


def publisher_bus(overrides: dict[str, Any]) -> Bus:
    """A bus playing the auth service."""
    return service_bus(overrides, "auth")


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class RunningService:
    app: web.Application
    server: AppServer
    publisher: Bus
    keys_server: JwksServer
    http: aiohttp.ClientSession
    tap: EventTap

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def books(self) -> Books:
        return self.app[keys.BOOKS]

    def token(self, uid: str, *roles: str) -> str:
        return self.keys_server.token(uid, roles or ("customer",))

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        key: str | None = None,
        base: str | None = None,
    ) -> Response:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["Idempotency-Key"] = key
        url = (base or self.url) + PREFIX + path
        async with self.http.request(method, url, json=json_body, headers=headers) as response:
            raw = await response.read()
            body = json.loads(raw) if raw and "json" in response.content_type else raw
            return Response(response.status, body, dict(response.headers))

    async def user(self, *roles: str, uid: str | None = None) -> str:
        """A user known to the service (auth.user.registered, then wait for the directory)."""
        uid = uid or user_id()
        data = UserRegistered(
            user_id=uid,
            email=f"{uid}@example.com",
            display_name="Test User",
            roles=list(roles or ("customer",)),
            registered_at=utcnow(),
        )
        await self.publisher.publish(new_envelope(data, service="auth"))

        async def known() -> bool:
            found = await self.books.directory.get(uid)
            return found is not None and set(found.roles) == set(roles or ("customer",))

        await eventually(known)
        return uid

    async def update_roles(self, uid: str, *roles: str) -> None:
        data = UserUpdated(
            user_id=uid,
            email=f"{uid}@example.com",
            display_name="Test User",
            roles=list(roles),
            updated_at=utcnow(),
        )
        await self.publisher.publish(new_envelope(data, service="auth"))

        async def updated() -> bool:
            found = await self.books.directory.get(uid)
            return found is not None and set(found.roles) == set(roles)

        await eventually(updated)

    async def delete_user(self, uid: str) -> None:
        await self.publisher.publish(
            new_envelope(UserDeleted(user_id=uid, deleted_at=utcnow()), service="auth")
        )

        async def gone() -> bool:
            found = await self.books.directory.get(uid)
            return found is not None and found.deleted

        await eventually(gone)

    async def fund(self, uid: str, amount: int, currency: str = "USD") -> dict[str, Any]:
        """A deposit through the test provider (credited at once); the deposit's view."""
        response = await self.call(
            "POST",
            "/deposits",
            token=self.token(uid),
            json_body={"amount": {"amount": amount, "currency": currency}},
        )
        assert response.status == 201, response.body
        return response.body  # type: ignore[no-any-return]

    async def wallet(self, uid: str, currency: str = "USD") -> dict[str, Any]:
        response = await self.call("GET", f"/wallet?currency={currency}", token=self.token(uid))
        assert response.status == 200, response.body
        return response.body  # type: ignore[no-any-return]

    async def check(self) -> LedgerReport:
        return await self.app[keys.SWEEPER].run_check()

    async def assert_balanced(self) -> LedgerReport:
        report = await self.check()
        assert report.consistent, report.json()
        assert report.balanced, report.json()
        assert report.negative_wallets == [], report.json()
        return report

    async def assert_books_add_up(self) -> None:
        """Recompute everything from the records: every transfer is final, every account
        equals the sum of its posted transfers, and every wallet's history runs 1..n with
        exact running balances ending at the wallet's balance."""
        ledger = self.books.ledger
        assert await ledger.transfers.count_documents({"state": "pending"}) == 0
        sums: dict[str, int] = {}
        async for transfer in ledger.transfers.find({"state": "posted"}):
            sums[transfer["debit"]] = sums.get(transfer["debit"], 0) - transfer["amount"]
            sums[transfer["credit"]] = sums.get(transfer["credit"], 0) + transfer["amount"]
        async for account in ledger.accounts.find({}):
            assert sums.get(account["_id"], 0) == account["balance"], account["_id"]
            if account["kind"] != "wallet":
                continue
            running = seq = 0
            async for entry in ledger.entries.find({"account": account["_id"]}).sort("seq", 1):
                seq, running = seq + 1, running + entry["amount"]
                assert (entry["seq"], entry["after"]) == (seq, running), entry
            assert running == account["balance"], account["_id"]

    async def balance(self, account_id: str) -> int:
        return await self.books.ledger.balance(account_id)


def offline_books(db: Any, **settings: Any) -> Books:
    """The service's Books on a database, without HTTP or a broker (events stay staged)."""
    from payments_svc.adapters.flows import (
        deposit_events,
        no_events,
        offer_events,
        withdrawal_events,
    )
    from payments_svc.adapters.ledger import Ledger
    from payments_svc.adapters.providers import TestProvider
    from payments_svc.adapters.records import Records
    from payments_svc.metrics import PaymentsMetrics
    from payments_svc.settings import PaymentsSettings
    from switchyard.directory import UserDirectory
    from switchyard.metrics import MetricsRegistry

    metrics = PaymentsMetrics(MetricsRegistry("payments"))
    ledger = Ledger(db, metrics=metrics)
    return Books(
        ledger=ledger,
        offers=Records(db["offers"], ledger, offer_events),
        deposits=Records(db["deposits"], ledger, deposit_events),
        withdrawals=Records(db["withdrawals"], ledger, withdrawal_events),
        adjustments=Records(db["adjustments"], ledger, no_events),
        directory=UserDirectory(db["payments_users"]),
        payout_accounts=db["payout_accounts"],
        webhook_events=db["webhook_events"],
        provider=TestProvider(),
        settings=PaymentsSettings(environment="test", **settings),
        metrics=metrics,
        published=lambda: None,
    )


def identity(uid: str, *roles: str) -> Any:
    from switchyard.tokens import Identity

    now = time.time()
    return Identity(
        user_id=uid,
        roles=frozenset(roles or ("customer",)),
        token_id=uuid.uuid4().hex,
        expires_at=now + 900,
        issued_at=now,
    )

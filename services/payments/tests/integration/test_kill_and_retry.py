"""The real service process SIGKILLed at random moments under mixed load — deposits,
withdrawals, offers and their transitions, admin adjustments, each under its own
Idempotency-Key — and restarted; every request the kills cut off is retried with its key
until it answers, as a client would. Then each key has moved money exactly once, every
account equals the sum of its posted transfers, every wallet's history adds up to its
balance, and the ledger check balances."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from ..support import eventually
from .test_service_crash import ServiceProcess, process_env, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KILLS = 6
PREFIX = "/api/v1/payments"
# A claim whose process died keeps its Idempotency-Key locked this long (the decorator's
# lock); retries before then are answered 409 and tried again.
LOCK_SECONDS = 60


@dataclass
class Request:
    key: str
    path: str
    user: str
    roles: tuple[str, ...]
    body: Any
    status: int = 0
    answer: Any = None
    cut: int = 0


@dataclass
class Client:
    url: str
    jwks: Any
    http: aiohttp.ClientSession
    sent: list[Request] = field(default_factory=list)

    async def send(self, request: Request) -> Request:
        headers = {
            "Authorization": f"Bearer {self.jwks.token(request.user, request.roles)}",
            "Idempotency-Key": request.key,
        }
        try:
            async with self.http.post(
                self.url + PREFIX + request.path, json=request.body, headers=headers
            ) as response:
                request.answer = await response.json(content_type=None)
                request.status = response.status
        except (aiohttp.ClientError, TimeoutError):
            request.cut += 1
            request.status = 0
        return request

    async def post(self, path: str, user: str, roles: tuple[str, ...], body: Any) -> Request:
        request = Request(f"k{len(self.sent)}-{random.random():.12f}", path, user, roles, body)
        self.sent.append(request)
        return await self.send(request)


async def test_killed_mid_load_every_retried_key_moves_money_once(
    settings_overrides, jwks_server, mongo_db, tmp_path, broker_cleanup
):
    # As in production: every process fingerprints a key's request alike.
    env = process_env(
        settings_overrides,
        jwks_server,
        IDEMPOTENCY_SECRET="chaos-test-idempotency-fingerprint-secret",
    )
    service = ServiceProcess(env, tmp_path / "payments.log")
    await service.start()
    customers, contractors, admin = ["cu0", "cu1", "cu2"], ["co0", "co1"], "ad0"
    await register(
        settings_overrides,
        mongo_db,
        {
            **{c: ["customer"] for c in customers},
            **{c: ["contractor"] for c in contractors},
            admin: ["admin"],
        },
    )
    rng = random.Random(20261129)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            client = Client(service.url, jwks_server, http)

            def money(amount: int) -> dict[str, Any]:
                return {"amount": amount, "currency": "USD"}

            async def customer_load(customer: str, stop: asyncio.Event) -> None:
                while not stop.is_set():
                    pick = rng.random()
                    if pick < 0.2:
                        await client.post(
                            "/deposits",
                            customer,
                            ("customer",),
                            {"amount": money(rng.randint(1, 9_000))},
                        )
                    elif pick < 0.35:
                        await client.post(
                            "/withdrawals",
                            customer,
                            ("customer",),
                            {"amount": money(rng.randint(1, 3_000))},
                        )
                    elif pick < 0.45:
                        await client.post(
                            "/admin/adjustments",
                            admin,
                            ("admin",),
                            {
                                "user_id": customer,
                                "direction": rng.choice(["credit", "debit"]),
                                "reason": "chaos test",
                                "amount": money(rng.randint(1, 2_000)),
                            },
                        )
                    else:
                        contractor = rng.choice(contractors)
                        made = await client.post(
                            "/offers",
                            customer,
                            ("customer",),
                            {
                                "contractor_id": contractor,
                                "job_id": "j",
                                "budget": money(rng.randint(1, 6_000)),
                            },
                        )
                        if made.status != 201:
                            continue
                        offer = made.answer["id"]
                        if rng.random() < 0.25:
                            await client.post(
                                f"/offers/{offer}/cancel", customer, ("customer",), None
                            )
                            continue
                        accepted = await client.post(
                            f"/offers/{offer}/accept", contractor, ("contractor",), None
                        )
                        if accepted.status == 200:
                            await client.post(
                                f"/offers/{offer}/complete", customer, ("customer",), None
                            )

            for _ in range(KILLS):
                stop = asyncio.Event()
                load = [asyncio.create_task(customer_load(c, stop)) for c in customers]
                await asyncio.sleep(rng.uniform(0.4, 1.6))
                service.kill()
                stop.set()
                await asyncio.gather(*load)
                await service.start()

            # The client retries every request that got no answer, or a 409 "in use" for
            # a key whose process died, with the same key, until it is answered.
            def unanswered() -> list[Request]:
                return [
                    r
                    for r in client.sent
                    if r.status == 0
                    or (r.status == 409 and r.answer.get("type", "").endswith("key-in-use"))
                ]

            cut = len([r for r in client.sent if r.cut])
            deadline = asyncio.get_running_loop().time() + LOCK_SECONDS + 60
            while unanswered() and asyncio.get_running_loop().time() < deadline:
                await asyncio.gather(*(client.send(r) for r in unanswered()))
                await asyncio.sleep(1)
            assert unanswered() == [], [(r.key, r.path, r.status) for r in unanswered()]

            async def settled() -> bool:
                moving = 0
                for name in ("offers", "deposits", "withdrawals", "adjustments"):
                    moving += await mongo_db[name].count_documents({"moving": {"$gt": ""}})
                pending = await mongo_db["transfers"].count_documents({"state": "pending"})
                # Pruned everywhere: every wallet entry is in the history by then.
                unpruned = await mongo_db["accounts"].count_documents({"entries": {"$gt": 0}})
                return moving == 0 and pending == 0 and unpruned == 0

            await eventually(settled, timeout=60)
            as_admin = {"Authorization": f"Bearer {jwks_server.token(admin, ['admin'])}"}
            async with http.get(
                service.url + PREFIX + "/admin/ledger/check", headers=as_admin
            ) as response:
                report = await response.json()
    finally:
        service.stop()

    assert cut >= KILLS // 2, cut  # the kills really cut requests off
    assert report["balanced"] and report["consistent_snapshot"], report
    assert report["negative_wallets"] == [] and report["pending_transfers"] == 0, report

    # Each key made at most one record, and every record belongs to exactly one key.
    made: dict[str, Counter[str]] = {
        name: Counter() for name in ("deposits", "withdrawals", "offers", "adjustments")
    }
    collection_of = {
        "/deposits": "deposits",
        "/withdrawals": "withdrawals",
        "/offers": "offers",
        "/admin/adjustments": "adjustments",
    }
    for request in client.sent:
        name = collection_of.get(request.path)
        if name is None:
            continue
        assert request.status in (201, 422), (request.path, request.status, request.answer)
        if request.status == 201:
            made[name][request.answer["id"]] += 1
    for name, ids in made.items():
        assert all(n == 1 for n in ids.values()), (name, ids)
        stored = {
            doc["_id"]
            async for doc in mongo_db[name].find({"status": {"$nin": ["rejected"]}}, {"_id": 1})
        }
        # A record no key answered for would be a second effect of some key.
        assert stored == set(ids), (name, stored ^ set(ids))

    # Every account is the sum of its posted transfers; every wallet's history adds up.
    balances = {a["_id"]: a for a in await mongo_db["accounts"].find({}).to_list()}
    sums: Counter[str] = Counter()
    async for transfer in mongo_db["transfers"].find({"state": "posted"}):
        sums[transfer["debit"]] -= transfer["amount"]
        sums[transfer["credit"]] += transfer["amount"]
    for account_id, account in balances.items():
        assert sums[account_id] == account["balance"], account_id
        assert not (account["never_negative"] and account["balance"] < 0), account_id
    assert sum(a["balance"] for a in balances.values()) == 0
    for account_id, account in balances.items():
        if account["kind"] != "wallet":
            continue
        running = n = 0
        async for entry in mongo_db["wallet_entries"].find({"account": account_id}).sort("seq", 1):
            n, running = n + 1, running + entry["amount"]
            assert (entry["seq"], entry["after"]) == (n, running), (account_id, entry)
        assert running == account["balance"], account_id

    # What each offer action answered is what the offer went through.
    offers = {o["_id"]: o async for o in mongo_db["offers"].find({})}
    reached = {
        "accept": {"accepted", "completed"},
        "complete": {"completed"},
        "cancel": {"cancelled"},
    }
    for request in client.sent:
        if not request.path.startswith("/offers/"):
            continue
        _, _, offer_id, action = request.path.split("/")
        assert request.status in (200, 409), (request.path, request.status, request.answer)
        if request.status == 200:
            assert offers[offer_id]["status"] in reached[action], (request.path, offers[offer_id])

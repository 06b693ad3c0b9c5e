"""The real service process (``python -m payments_svc``) killed by SIGKILL while customers
run offer flows against it, then started again: its sweeper finishes every transition that
was cut off, and every offer's money is exactly where its final status says."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from payments_svc.domain import accounts as acct
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserRegistered
from switchyard.testing.servers import free_port

from ..support import eventually, publisher_bus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KILLS = 3  # the 20+ kill loop is test_crash_loop's; this one covers the records
DEPOSIT = 1_000_000


class ServiceProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = int(env["PAYMENTS_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "payments_svc"], env=self.env, stdout=log, stderr=log
            )

    async def start(self) -> None:
        self._spawn()
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(self.log.read_text()[-3000:])
                try:
                    async with http.get(self.url + "/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            try:  # generous: a loaded machine took > 60 s; a timeout shows the log
                await eventually(ready, timeout=90, interval=0.1)
            except AssertionError as error:
                self.stop()  # a process that never became ready must not outlive the test
                raise AssertionError(f"{error}; log: {self.log.read_text()[-3000:]}") from None

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)  # the process this test started
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def process_env(
    settings_overrides: dict[str, Any], jwks_server: Any, **extra: str
) -> dict[str, str]:
    """The environment of a ``python -m payments_svc`` process on the test's store and
    broker, trusting the test's token keys."""
    return {
        **os.environ,
        "SWITCHYARD_ENV": "test",
        "PAYMENTS_PORT": str(free_port()),
        "MONGO_URL": settings_overrides["mongo_url"],
        "MONGO_DATABASE": settings_overrides["mongo_database"],
        "AMQP_URL": settings_overrides["amqp_url"],
        "BUS_EXCHANGE": settings_overrides["bus_exchange"],
        "BUS_QUEUE_PREFIX": settings_overrides["bus_queue_prefix"],
        "BUS_QUEUE_EXPIRES_MS": "60000",
        "BUS_QUEUE_TYPE": "classic",
        "JWKS_URL": jwks_server.jwks_url,
        "AUTH_ISSUER": jwks_server.issuer,
        "JWT_AUDIENCE": jwks_server.audience,
        # reads the revoked sessions from the JwksServer standing in for auth (not ready before)
        "INTERNAL_API_TOKEN": jwks_server.internal_token,
        "LEDGER_STALE_AFTER": "1",
        "LEDGER_SWEEP_INTERVAL": "0.2",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


async def register(
    settings_overrides: dict[str, Any], mongo_db: Any, users: dict[str, list[str]]
) -> None:
    """Publish ``auth.user.registered`` for each user (id → roles) and wait until the
    service's directory knows them all."""
    publisher = publisher_bus(settings_overrides)
    await publisher.connect()
    for uid, roles in users.items():
        data = UserRegistered(
            user_id=uid,
            email=f"{uid}@example.com",
            display_name=uid,
            roles=roles,
            registered_at=utcnow(),
        )
        await publisher.publish(new_envelope(data, service="auth"))
    await publisher.close()

    async def known() -> bool:
        return await mongo_db["payments_users"].count_documents({}) == len(users)

    await eventually(known)


async def test_service_killed_mid_flows_finishes_every_offer_after_restart(
    settings_overrides, jwks_server, mongo_db, tmp_path, broker_cleanup
):
    env = process_env(settings_overrides, jwks_server)
    service = ServiceProcess(env, tmp_path / "payments.log")
    await service.start()
    customers = [f"cus{n}" for n in range(4)]
    contractor = "con0"
    await register(
        settings_overrides,
        mongo_db,
        {**{c: ["customer"] for c in customers}, contractor: ["contractor"]},
    )
    rng = random.Random(11)
    outcomes: Counter[str] = Counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def call(
            method: str, path: str, uid: str, roles: tuple[str, ...], body: Any = None
        ) -> int:
            headers = {"Authorization": f"Bearer {jwks_server.token(uid, roles)}"}
            try:
                async with http.request(
                    method, service.url + "/api/v1/payments" + path, json=body, headers=headers
                ) as r:
                    payload = await r.json(content_type=None)
                    if r.status in (200, 201) and path == "/offers":
                        return payload["id"]  # type: ignore[no-any-return]
                    return r.status
            except (aiohttp.ClientError, TimeoutError):
                outcomes["cut"] += 1
                return -1

        for customer in customers:
            status = await call(
                "POST",
                "/deposits",
                customer,
                ("customer",),
                {"amount": {"amount": DEPOSIT, "currency": "USD"}},
            )
            assert status == 201

        async def flows(customer: str, stop: asyncio.Event) -> None:
            while not stop.is_set():
                budget = rng.randint(1, 20_000)
                offer = await call(
                    "POST",
                    "/offers",
                    customer,
                    ("customer",),
                    {
                        "contractor_id": contractor,
                        "job_id": "j",
                        "budget": {"amount": budget, "currency": "USD"},
                    },
                )
                if not isinstance(offer, str):
                    await asyncio.sleep(0.05)
                    continue
                outcomes["created"] += 1
                if rng.random() < 0.2:
                    await call("POST", f"/offers/{offer}/cancel", customer, ("customer",))
                    continue
                await call("POST", f"/offers/{offer}/accept", contractor, ("contractor",))
                await call("POST", f"/offers/{offer}/complete", customer, ("customer",))

        for _ in range(KILLS):
            stop = asyncio.Event()
            clients = [asyncio.create_task(flows(c, stop)) for c in customers]
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            service.kill()
            stop.set()
            await asyncio.gather(*clients)
            await service.start()
    try:
        offers, accounts = mongo_db["offers"], mongo_db["accounts"]

        async def settled() -> bool:
            moving = await offers.count_documents(
                {
                    "moving": {
                        "$in": [m for m in ("create", "accept", "complete", "cancel", "refund")]
                    }
                }
            )
            pending = await mongo_db["transfers"].count_documents({"state": "pending"})
            return moving == 0 and pending == 0

        await eventually(settled, timeout=60)
        assert outcomes["cut"] >= 1, outcomes  # the kills really cut requests off
        books = {a["_id"]: a["balance"] for a in await accounts.find({}).to_list()}
        all_offers = await offers.find({}).to_list()
        by_status = Counter(o["status"] for o in all_offers)
        assert set(by_status) <= {"created", "accepted", "completed", "cancelled", "rejected"}, (
            by_status
        )
        revenue = payouts = 0
        spent = dict.fromkeys(customers, 0)
        for o in all_offers:
            b, f, s, p, status = (
                o["budget"],
                o["platform_fee"],
                o["service_fee"],
                o["payout"],
                o["status"],
            )
            assert books.get(acct.hold("USD", o["_id"]), 0) == (
                b + f if status == "created" else 0
            ), o
            assert books.get(acct.escrow("USD", o["_id"]), 0) == (
                b if status == "accepted" else 0
            ), o
            if status in ("created", "accepted", "completed"):
                spent[o["customer_id"]] += b + f
            if status in ("accepted", "completed"):
                revenue += f
            if status == "completed":
                revenue += s
                payouts += p
        assert books["revenue:USD"] == revenue
        assert books[acct.wallet("USD", contractor)] == payouts
        for customer in customers:
            assert books[acct.wallet("USD", customer)] == DEPOSIT - spent[customer]
        assert sum(books.values()) == 0
        assert by_status["completed"] >= 1
    finally:
        service.stop()

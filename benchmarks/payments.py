"""Payments benchmarks: offer → accept → complete flows through the real gateway, the
latency of a money-moving request at 50 flows/s, and the ledger against its floor.

``uv run python -m benchmarks payments``

The payments app (real broker at AMQP_URL, embedded store, test provider) behind the
gateway (tokens verified, rate limits on, quotas too large to refuse), both in this
process, on loopback:

- baseline: the embedded store's raw guarded-update rate — concurrent
  ``update_one({_id, balance: {$gte: 1}}, {$inc: {balance: -1}})`` on separate documents,
  the single-document operation every ledger step is built from;
- ledger transfers/s: ``Ledger.execute`` of world → wallet transfers at the same
  concurrency; the target is ≥ 0.5 × the raw rate ÷ the store writes one transfer makes
  (counted with a command listener, not assumed);
- flows/s: closed-loop customers running offer → accept → complete through the gateway;
- p50/p95/p99 of a money-moving request (create, accept, complete) at 50 flows/s offered
  open-loop; the target is p95 < 100 ms (the seed SLO).

Bounded: about 40 s in all, with a hard stop at 120 s.
"""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.rows import row

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONCURRENCY = 16
RAW_SECONDS = 4.0
LEDGER_SECONDS = 4.0
FLOW_SECONDS = 8.0
OFFERED_FLOWS = 50.0
LATENCY_SECONDS = 8.0
CUSTOMERS = 40
TARGET_P95_MS = 100.0
HARD_LIMIT_SECONDS = 120.0
WRITES = frozenset({"insert", "update", "findAndModify", "delete"})

_row = functools.partial(row, "payments")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def _for(seconds: float, worker: Any, concurrency: int) -> int:
    """Run ``worker(n)`` repeatedly in ``concurrency`` loops for ``seconds``; count the runs."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(lane: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < deadline:
            await worker(lane, n)
            n += 1
            done += 1

    await asyncio.gather(*(loop(lane) for lane in range(concurrency)))
    return done


async def _store_floor(mongo_url: str, name: str) -> tuple[float, float, float]:
    """(raw guarded updates/s, ledger transfers/s, store writes per transfer)."""
    from pymongo import AsyncMongoClient, monitoring

    from payments_svc.adapters.ledger import Ledger, ledger_indexes
    from payments_svc.domain import accounts as acct
    from payments_svc.domain.accounts import AccountSpec, TransferSpec
    from switchyard.mongo import ensure_indexes

    class Writes(monitoring.CommandListener):
        count = 0

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name in WRITES:
                Writes.count += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            return None

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, event_listeners=[Writes()]
    )
    db = client[name + "_floor"]
    try:
        raw = db["raw"]
        await raw.insert_many([{"_id": f"a{n}", "balance": 10**9} for n in range(CONCURRENCY)])

        async def guarded(lane: int, n: int) -> None:
            await raw.update_one(
                {"_id": f"a{lane}", "balance": {"$gte": 1}}, {"$inc": {"balance": -1}}
            )

        started = time.perf_counter()
        raw_rate = await _for(RAW_SECONDS, guarded, CONCURRENCY) / (time.perf_counter() - started)

        await ensure_indexes(db, ledger_indexes())
        ledger = Ledger(db)
        world = AccountSpec(acct.platform("world", "USD"))

        async def transfer(lane: int, n: int) -> None:
            user = f"u{lane}"
            wallet = AccountSpec(acct.wallet("USD", user), owner=user)
            await ledger.execute(TransferSpec(f"bench:{lane}:{n}", world, wallet, 1, "deposit"))

        await transfer(999, 0)  # opens the world account outside the measurement
        Writes.count = 0
        started = time.perf_counter()
        transfers = await _for(LEDGER_SECONDS, transfer, CONCURRENCY)
        ledger_rate = transfers / (time.perf_counter() - started)
        writes_per_transfer = Writes.count / max(transfers, 1)
    finally:
        await client.drop_database(db.name)
        await client.close()
    return raw_rate, ledger_rate, writes_per_transfer


async def _measure(amqp_url: str, scratch: Path) -> list[dict[str, Any]]:
    import aiohttp
    import yaml

    from gateway_svc.app import create_app as create_gateway
    from gateway_svc.settings import DEFAULT_ROUTES_FILE, GatewaySettings
    from payments_svc import keys
    from payments_svc.app import create_app
    from payments_svc.settings import PaymentsSettings
    from switchyard.envelope import utcnow
    from switchyard.mongo.embedded import EmbeddedMongo
    from switchyard.testing import JwksServer
    from switchyard.testing.servers import AppServer, delete_exchange, free_port

    name = "bench" + uuid.uuid4().hex[:10]
    mongo = EmbeddedMongo(scratch / "mongo")
    await asyncio.to_thread(mongo.start)
    jwks = await JwksServer().start()
    settings = PaymentsSettings(
        environment="test",
        amqp_url=amqp_url,
        mongo_url=mongo.url,
        mongo_database=name,
        bus_exchange=f"switchyard.events.{name}",
        bus_queue_prefix=f"{name}.",
        bus_queue_expires_ms=60_000,
        jwks_url=jwks.jwks_url,
        auth_issuer=jwks.issuer,
        jwt_audience=jwks.audience,
        log_level="WARNING",
    )
    app = create_app(settings)
    server = await AppServer(app).start()
    # The shipped route table with quotas no benchmark reaches (every request still checked).
    table = yaml.safe_load(DEFAULT_ROUTES_FILE.read_text())
    for policy in table["rate_limits"].values():
        policy["limit"] = 10**7
    routes = scratch / "routes.yaml"
    routes.write_text(yaml.safe_dump(table))
    gateway_port = free_port()
    gateway = create_gateway(
        GatewaySettings(
            environment="test",
            port=gateway_port,
            routes_file=routes,
            payments_upstreams=[server.url],
            jwks_url=jwks.jwks_url,
            auth_issuer=jwks.issuer,
            jwt_audience=jwks.audience,
            access_log="off",
            log_level="WARNING",
        )
    )
    await gateway.start()
    base = f"http://127.0.0.1:{gateway_port}/api/v1/payments"
    books = app[keys.BOOKS]
    contractor = "bench-contractor"
    customers = [f"bench-customer-{n}" for n in range(CUSTOMERS)]
    for uid in [contractor, *customers]:
        roles = ["contractor"] if uid == contractor else ["customer"]
        await books.directory.record_profile(
            uid, email=f"{uid}@example.com", display_name=uid, roles=roles, as_of=utcnow()
        )
    tokens = {
        uid: {"Authorization": f"Bearer {jwks.token(uid, ['customer'])}"} for uid in customers
    }
    as_contractor = {"Authorization": f"Bearer {jwks.token(contractor, ['contractor'])}"}
    latencies: list[float] = []
    failures = 0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:

            async def timed(
                method: str, url: str, headers: dict[str, str], body: Any = None
            ) -> Any:
                nonlocal failures
                started = time.perf_counter()
                async with http.request(method, url, json=body, headers=headers) as response:
                    payload = await response.json(content_type=None)
                    if response.status >= 300:
                        failures += 1
                latencies.append(time.perf_counter() - started)
                return payload

            for uid in customers:
                async with http.post(
                    base + "/deposits",
                    json={"amount": {"amount": 10**10, "currency": "USD"}},
                    headers=tokens[uid],
                ) as r:
                    assert r.status == 201, await r.text()

            async def flow(lane: int, n: int = 0) -> None:
                customer = customers[lane % CUSTOMERS]
                offer = await timed(
                    "POST",
                    base + "/offers",
                    tokens[customer],
                    {
                        "contractor_id": contractor,
                        "job_id": f"j{lane}-{n}",
                        "budget": {"amount": 10_001, "currency": "USD"},
                    },
                )
                await timed("POST", f"{base}/offers/{offer['id']}/accept", as_contractor)
                await timed("POST", f"{base}/offers/{offer['id']}/complete", tokens[customer])

            await _for(2.0, flow, CONCURRENCY)  # warm-up
            latencies.clear()
            started = time.perf_counter()
            flows = await _for(FLOW_SECONDS, flow, CONCURRENCY)
            flow_rate = flows / (time.perf_counter() - started)

            latencies.clear()
            count = int(OFFERED_FLOWS * LATENCY_SECONDS)
            loop = asyncio.get_running_loop()
            origin = loop.time()
            tasks = []
            for n in range(count):
                await asyncio.sleep(max(0.0, origin + n / OFFERED_FLOWS - loop.time()))
                tasks.append(asyncio.create_task(flow(n)))
            await asyncio.gather(*tasks)
            achieved = count / (loop.time() - origin)
            report = await app[keys.SWEEPER].run_check()
        raw_rate, ledger_rate, writes = await _store_floor(mongo.url, name)
    finally:
        await gateway.stop(grace=0.5)
        await server.stop()
        await jwks.stop()
        await delete_exchange(amqp_url, settings.bus_exchange)
        await asyncio.to_thread(mongo.stop)

    p50, p95, p99 = (_percentile(latencies, q) * 1000 for q in (0.50, 0.95, 0.99))
    floor_target = 0.5 * raw_rate / writes
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    setting = f"1 replica + gateway in one process, embedded store, load average {load} on {os.cpu_count()} cores"
    return [
        _row(
            "store raw guarded updates/s (baseline)",
            round(raw_rate, 1),
            None,
            "updates/s",
            f"{CONCURRENCY} concurrent update_one with a $gte guard and $inc, separate documents",
        ),
        _row(
            "ledger transfers/s",
            round(ledger_rate, 1),
            round(floor_target, 1),
            "transfers/s",
            f"{CONCURRENCY} concurrent world → wallet transfers; {writes:.2f} store writes per transfer "
            f"(measured); baseline = target 0.5 × raw ÷ writes",
        ),
        _row(
            "offer → accept → complete flows/s (gateway)",
            round(flow_rate, 1),
            OFFERED_FLOWS,
            "flows/s",
            f"{CONCURRENCY} closed-loop customers, B = 10,001; baseline = the 50 flows/s load point; {setting}",
        ),
        _row(
            f"money-moving request p50 at {OFFERED_FLOWS:.0f} flows/s",
            round(p50, 1),
            None,
            "ms",
            f"{count} flows offered open-loop over {LATENCY_SECONDS:.0f} s (achieved {achieved:.1f}/s); "
            f"{len(latencies)} requests, {failures} not 2xx",
        ),
        _row(
            f"money-moving request p95 at {OFFERED_FLOWS:.0f} flows/s",
            round(p95, 1),
            TARGET_P95_MS,
            "ms",
            "target p95 < 100 ms (seed SLO)",
        ),
        _row(
            f"money-moving request p99 at {OFFERED_FLOWS:.0f} flows/s",
            round(p99, 1),
            None,
            "ms",
            f"ledger after the run: balanced={report.balanced}, total={report.total}, "
            f"pending={report.pending_transfers}",
        ),
    ]


async def run() -> list[dict[str, Any]]:
    import aio_pika

    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    try:
        connection = await asyncio.wait_for(aio_pika.connect(amqp_url), 10)
        await connection.close()
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        return [_row("flows/s", None, None, "flows/s", f"skipped: no broker ({error!r})")]
    with tempfile.TemporaryDirectory() as scratch:
        return await asyncio.wait_for(_measure(amqp_url, Path(scratch)), HARD_LIMIT_SECONDS)


if __name__ == "__main__":
    for result in asyncio.run(run()):
        print(result)

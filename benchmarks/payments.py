"""Payments benchmarks: offer → accept → complete flows through the real gateway, the
latency of a money-moving request at 50 flows/s, and the ledger against its floor.

``uv run python -m benchmarks payments``

The payments app (real broker at AMQP_URL, embedded store, test provider) behind the
gateway (tokens verified, rate limits on, quotas too large to refuse), both in this
process, on loopback:

- baseline: the embedded store's raw guarded-update rate, measured in rounds interleaved
  with the ledger's (so both see the same machine load) — concurrent
  ``update_one({_id, balance: {$gte: 1}}, {$inc: {balance: -1}})`` on separate documents,
  the single-document operation every ledger step is built from;
- ledger transfers/s: ``Ledger.execute`` of world → wallet transfers at the same
  concurrency; the target is ≥ 0.5 × the raw rate ÷ the store writes one transfer makes
  (counted with a command listener, not assumed);
- flows/s: closed-loop customers running offer → accept → complete through the gateway;
- p50/p95/p99 of a money-moving request (create, accept, complete) at 50 flows/s offered
  open-loop; the target is p95 < 100 ms (the seed SLO).

Bounded: about 40 s in all, with a hard stop at 120 s. On a loaded machine the open-loop
phase queues up (50 flows/s above what it sustains) and may not drain before the stop:
``BENCH_PAYMENTS_LATENCY_SECONDS`` (default 8) offers fewer flows and
``BENCH_PAYMENTS_HARD_LIMIT`` (default 120) allows longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.processes import gateway_process, run_namespace, service_process
from benchmarks.rows import row

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONCURRENCY = 16
RAW_SECONDS = 6.0
LEDGER_SECONDS = 6.0
ROUNDS = 4
FLOW_SECONDS = 8.0
OFFERED_FLOWS = 50.0
LATENCY_SECONDS = float(os.environ.get("BENCH_PAYMENTS_LATENCY_SECONDS", "8"))
CUSTOMERS = 40
TARGET_P95_MS = 100.0
HARD_LIMIT_SECONDS = float(os.environ.get("BENCH_PAYMENTS_HARD_LIMIT", "120"))
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
    from payments_svc.adapters.maintenance import PruneControl, Pruner
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

        await ensure_indexes(db, ledger_indexes())
        ledger = Ledger(db)
        world = AccountSpec(acct.platform("world", "USD"))
        rounds: list[int] = [0]

        async def transfer(lane: int, n: int) -> None:
            user = f"u{lane}"
            wallet = AccountSpec(acct.wallet("USD", user), owner=user)
            key = f"bench:{rounds[0]}:{lane}:{n}"
            await ledger.execute(TransferSpec(key, world, wallet, 1, "deposit"))

        await transfer(999, 0)  # opens the world account outside the measurement
        # The pruner on its own client: its writes are the sweeper's, not the transfers'.
        sweeper_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        control = PruneControl(sweeper_client[db.name])
        await control.ensure()
        pruner = Pruner(sweeper_client[db.name], control)

        async def prune_like_the_sweeper() -> None:
            while True:
                await asyncio.sleep(1.0)  # LEDGER_SWEEP_INTERVAL
                await pruner.prune()

        sweeping = asyncio.create_task(prune_like_the_sweeper())
        # Interleaved rounds, so both see the same machine load (other processes share it).
        raw_runs = raw_time = transfers = ledger_time = 0.0
        Writes.count = 0
        writes = 0
        for round_number in range(ROUNDS):
            rounds[0] = round_number
            started = time.perf_counter()
            raw_runs += await _for(RAW_SECONDS / ROUNDS, guarded, CONCURRENCY)
            raw_time += time.perf_counter() - started
            before = Writes.count
            started = time.perf_counter()
            transfers += await _for(LEDGER_SECONDS / ROUNDS, transfer, CONCURRENCY)
            ledger_time += time.perf_counter() - started
            writes += Writes.count - before
        raw_rate, ledger_rate = raw_runs / raw_time, transfers / ledger_time
        writes_per_transfer = writes / max(transfers, 1)
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
        await sweeper_client.close()
    finally:
        await client.drop_database(db.name)
        await client.close()
    return raw_rate, ledger_rate, writes_per_transfer


async def _measure(amqp_url: str, scratch: Path) -> list[dict[str, Any]]:
    import aio_pika
    import aiohttp
    from pymongo import AsyncMongoClient

    from switchyard.directory import UserDirectory
    from switchyard.envelope import utcnow
    from switchyard.mongo.embedded import EmbeddedMongo
    from switchyard.testing import JwksServer
    from switchyard.testing.servers import delete_exchange, free_port

    name = "bench" + uuid.uuid4().hex[:10]
    exchange = f"switchyard.events.{name}"
    mongo = EmbeddedMongo(scratch / "mongo")
    await asyncio.to_thread(mongo.start)
    jwks = await JwksServer().start()
    # The events' consumer (notification, in the suite): a queue bound to payments.*.
    broker = await aio_pika.connect(amqp_url)
    channel = await broker.channel()
    topic = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    sink = await channel.declare_queue(
        f"{name}.sink", auto_delete=True, arguments={"x-max-length": 1}
    )
    await sink.bind(topic, "payments.#")
    payments_port, gateway_port = free_port(), free_port()
    common = {
        "SWITCHYARD_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "JWKS_URL": jwks.jwks_url,
        "AUTH_ISSUER": jwks.issuer,
        "JWT_AUDIENCE": jwks.audience,
    }
    namespace = run_namespace(amqp_url, mongo.url, name, exchange)
    payments = service_process("payments", payments_port, common, namespace, scratch)
    gateway = gateway_process("payments", payments_port, gateway_port, common, namespace, scratch)
    base = f"http://127.0.0.1:{gateway_port}/api/v1/payments"
    contractor = "bench-contractor"
    customers = [f"bench-customer-{n}" for n in range(CUSTOMERS)]
    tokens = {
        uid: {"Authorization": f"Bearer {jwks.token(uid, ['customer'])}"} for uid in customers
    }
    as_contractor = {"Authorization": f"Bearer {jwks.token(contractor, ['contractor'])}"}
    as_admin = {"Authorization": f"Bearer {jwks.token('bench-admin', ['admin'])}"}
    latencies: list[float] = []
    failures: Counter[int] = Counter()
    try:
        await payments.ready(f"http://127.0.0.1:{payments_port}/readyz", timeout=60)
        await gateway.ready(f"http://127.0.0.1:{gateway_port}/readyz", timeout=60)
        store: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url, tz_aware=True)
        directory = UserDirectory(store[name]["payments_users"])  # what auth's events would write
        for uid in [contractor, *customers]:
            roles = ["contractor"] if uid == contractor else ["customer"]
            await directory.record_profile(
                uid, email=f"{uid}@example.com", display_name=uid, roles=roles, as_of=utcnow()
            )
        await store.close()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:

            async def timed(
                method: str, url: str, headers: dict[str, str], body: Any = None
            ) -> Any:
                started = time.perf_counter()
                async with http.request(method, url, json=body, headers=headers) as response:
                    payload = await response.json(content_type=None)
                    if response.status >= 300:
                        failures[response.status] += 1
                latencies.append(time.perf_counter() - started)
                return payload

            for uid in customers:
                body = {"amount": {"amount": 10**10, "currency": "USD"}}
                async with http.post(base + "/deposits", json=body, headers=tokens[uid]) as r:
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
            failures.clear()
            count = int(OFFERED_FLOWS * LATENCY_SECONDS)
            loop = asyncio.get_running_loop()
            origin = loop.time()
            tasks = []
            for n in range(count):
                await asyncio.sleep(max(0.0, origin + n / OFFERED_FLOWS - loop.time()))
                tasks.append(asyncio.create_task(flow(n)))
            await asyncio.gather(*tasks, return_exceptions=True)
            achieved = count / (loop.time() - origin)
            await asyncio.sleep(2)  # let the sweeper prune what the last flows left
            async with http.get(base + "/admin/ledger/check", headers=as_admin) as response:
                report = await response.json()
        raw_rate, ledger_rate, writes = await _store_floor(mongo.url, name)
    finally:
        gateway.stop()
        payments.stop()
        await jwks.stop()
        await broker.close()
        await delete_exchange(amqp_url, exchange)
        await asyncio.to_thread(mongo.stop)

    p50, p95, p99 = (_percentile(latencies, q) * 1000 for q in (0.50, 0.95, 0.99))
    floor_target = 0.5 * raw_rate / writes
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    setting = (
        f"payments, gateway and the store each a process, load generator in this one; "
        f"load average {load} on {os.cpu_count()} cores"
    )
    ledger = report["currencies"].get("USD", {})
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
            f"{CONCURRENCY} concurrent world → wallet transfers; {writes:.2f} store writes per "
            f"transfer (measured); baseline = the target, 0.5 × raw ÷ writes",
        ),
        _row(
            "offer → accept → complete flows/s (gateway)",
            round(flow_rate, 1),
            OFFERED_FLOWS,
            "flows/s",
            f"{CONCURRENCY} closed-loop customers, B = 10,001; baseline = the 50 flows/s load "
            f"point; {setting}",
        ),
        _row(
            f"money-moving request p50 at {OFFERED_FLOWS:.0f} flows/s",
            round(p50, 1),
            None,
            "ms",
            f"{count} flows offered open-loop over {LATENCY_SECONDS:.0f} s (achieved "
            f"{achieved:.1f}/s); {len(latencies)} requests, not 2xx: {dict(failures) or 'none'}",
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
            f"ledger check after the run: balanced={report['balanced']}, total={report['total']}, "
            f"with pending={ledger.get('with_pending')}, pending={report['pending_transfers']}, "
            f"consistent snapshot={report['consistent_snapshot']}, "
            f"accounts={report['accounts']}",
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

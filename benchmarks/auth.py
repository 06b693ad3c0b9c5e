"""Auth benchmarks: shared token verification (the gateway's hot path) and logins.

``uv run python -c "import asyncio, benchmarks.auth as b; print(asyncio.run(b.run()))"``

- token verifications/s: ``switchyard.tokens.TokenVerifier.verify`` with cached keys, one core
  (this event loop's thread); baseline = the 10,000/s target. PyJWT's decode of the same token
  is reported beside it for reference.
- token verifications/s with the revoked-session deny-list (``switchyard.revocation``, 100,000
  sessions denied, the token's own not among them) beside the same verifier without one,
  measured alternately in one run (median of five each): the hot-path cost of revocation.
- argon2id verifications/s at the production cost, through the service's hasher pool.
- logins/s end to end: HTTP against the running auth app (embedded store, real broker at
  AMQP_URL) at the production argon2 cost; argon2id bounds it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.rows import row

TARGET_VERIFICATIONS = 10_000
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


_row = row


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(200):
        fn()
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(500):
            fn()
        count += 500
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def bench_verification(seconds: float = 2.0) -> list[dict[str, Any]]:
    import jwt

    from switchyard.tokens import StaticKeys, TokenSigner, TokenVerifier, generate_signing_key

    kid, private = generate_signing_key()
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}), issuer="https://bench", audience="bench"
    )
    token = (
        TokenSigner(private, kid, issuer="https://bench", audience="bench")
        .issue("0190f5c2a1b2c3d4e5f60718293a4b5c", ["customer"])
        .token
    )
    ours = _rate(lambda: verifier.verify(token), seconds)
    public = private.public_key()
    pyjwt = _rate(
        lambda: jwt.decode(
            token, public, algorithms=["EdDSA"], audience="bench", issuer="https://bench", leeway=30
        ),
        seconds / 2,
    )
    raw_sig = private.sign(b"x" * 300)
    raw = _rate(lambda: public.verify(raw_sig, b"x" * 300), seconds / 2)
    return [
        _row(
            "auth",
            "token verifications/s (shared verifier, cached keys, 1 core)",
            round(ours),
            TARGET_VERIFICATIONS,
            "ops/s",
            f"target ≥ {TARGET_VERIFICATIONS:,}/s; PyJWT decode of the same token: "
            f"{pyjwt:,.0f}/s; bare Ed25519 verify: {raw:,.0f}/s",
        ),
    ]


def bench_deny_list(seconds: float = 1.0, denied: int = 100_000) -> list[dict[str, Any]]:
    import secrets

    from switchyard.revocation import DenyList
    from switchyard.tokens import StaticKeys, TokenSigner, TokenVerifier, generate_signing_key

    kid, private = generate_signing_key()
    keys = StaticKeys({kid: private.public_key()})
    plain = TokenVerifier(keys=keys, issuer="https://bench", audience="bench")
    deny_list = DenyList(capacity=denied + 1)
    for _ in range(denied):
        deny_list.add(secrets.token_hex(16), time.time() + 900)
    guarded = TokenVerifier(
        keys=keys, issuer="https://bench", audience="bench", denied=deny_list.entries
    )
    token = (
        TokenSigner(private, kid, issuer="https://bench", audience="bench")
        .issue(
            "0190f5c2a1b2c3d4e5f60718293a4b5c", ["customer"], extra={"sid": secrets.token_hex(16)}
        )
        .token
    )
    without, with_list = [], []
    for _ in range(5):  # alternately, so both see the same load on a shared machine
        without.append(_rate(lambda: plain.verify(token), seconds))
        with_list.append(_rate(lambda: guarded.verify(token), seconds))
    best_without, best_with = sorted(without)[2], sorted(with_list)[2]
    return [
        _row(
            "auth",
            f"token verifications/s with a {denied:,}-session deny-list (1 core)",
            round(best_with),
            round(best_without),
            "ops/s",
            f"baseline = the same verifier without a deny-list, same run; ratio "
            f"{best_with / best_without:.3f} (one dict lookup of sid per verification)",
        ),
    ]


async def bench_argon2(seconds: float = 3.0) -> list[dict[str, Any]]:
    from auth_svc.adapters.passwords import Passwords
    from auth_svc.domain.passwords import OWASP_MINIMUM

    hasher = Passwords(OWASP_MINIMUM)
    try:
        stored = await hasher.hash("violet-harbour-47-kettle")
        workers = hasher._pool._max_workers  # noqa: SLF001 - reported, not changed
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.gather(
                *(hasher.verify(stored, "violet-harbour-47-kettle") for _ in range(workers))
            )
            count += workers
        rate = count / (time.perf_counter() - started)
    finally:
        hasher.close()
    return [
        _row(
            "auth",
            "argon2id verifications/s (production cost)",
            round(rate, 1),
            None,
            "ops/s",
            f"{OWASP_MINIMUM.describe()}, {workers} hasher threads on {os.cpu_count()} cores",
        ),
    ]


async def bench_logins(seconds: float = 5.0, concurrency: int = 4) -> list[dict[str, Any]]:
    import aio_pika
    import aiohttp

    from auth_svc.app import create_app
    from auth_svc.domain.passwords import OWASP_MINIMUM
    from auth_svc.settings import AuthSettings
    from switchyard.mongo.embedded import EmbeddedMongo
    from switchyard.testing.servers import AppServer

    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    name = "bench" + uuid.uuid4().hex[:10]
    exchange = f"switchyard.events.{name}"
    email, password = f"{name}@example.com", "violet-harbour-47-kettle"
    metric = "logins/s (HTTP, end to end, production argon2id cost)"
    try:
        connection = await asyncio.wait_for(aio_pika.connect(amqp_url), 5)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        return [_row("auth", metric, None, None, "ops/s", f"skipped: no broker ({error!r})")]
    with tempfile.TemporaryDirectory() as scratch:
        mongo = EmbeddedMongo(Path(scratch) / "mongo")
        await asyncio.to_thread(mongo.start)
        try:
            channel = await connection.channel()
            sink_exchange = await channel.declare_exchange(exchange, "topic", durable=True)
            sink = await channel.declare_queue(exclusive=True, auto_delete=True)
            await sink.bind(sink_exchange, "#")  # events have somewhere to go
            settings = AuthSettings(
                environment="test",
                service_name="auth",
                keys_dir=Path(scratch) / "keys",
                amqp_url=amqp_url,
                mongo_url=mongo.url,
                mongo_database=name,
                bus_exchange=exchange,
                bus_queue_prefix=f"{name}.",
                log_level="WARNING",
                admin_email=email,
                admin_password=password,
            )
            server = await AppServer(create_app(settings)).start()
            try:
                async with aiohttp.ClientSession(server.url) as http:
                    body = {"email": email, "password": password}

                    async def one() -> None:
                        async with http.post("/api/v1/auth/login", json=body) as reply:
                            assert reply.status == 200, await reply.text()
                            await reply.read()

                    await one()
                    count, started = 0, time.perf_counter()
                    while time.perf_counter() - started < seconds:
                        await asyncio.gather(*(one() for _ in range(concurrency)))
                        count += concurrency
                    rate = count / (time.perf_counter() - started)
            finally:
                await server.stop()
            await channel.exchange_delete(exchange)
        finally:
            await connection.close()
            await asyncio.to_thread(mongo.stop)
    return [
        _row(
            "auth",
            metric,
            round(rate, 1),
            None,
            "ops/s",
            f"{OWASP_MINIMUM.describe()}; {concurrency} concurrent clients; embedded store; "
            "each login = attempt reserved, user read, argon2id verify, attempts cleared, "
            "session insert, JWT sign",
        ),
    ]


async def run() -> list[dict[str, Any]]:
    rows = bench_verification()
    rows += bench_deny_list()
    rows += await bench_argon2()
    rows += await bench_logins()
    return rows


if __name__ == "__main__":
    for row in asyncio.run(run()):
        print(row)

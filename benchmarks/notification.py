"""Notification benchmarks: auth events in, emails accepted by a local SMTP server out;
chat messages in, pushes received by a local FCM out; events in, webhooks received out.

``uv run python -c "import asyncio, benchmarks.notification as b; print(asyncio.run(b.run()))"``

The running notification app (real broker at AMQP_URL, embedded store, its one
SMTP connection) against an aiosmtpd sink in this process, which stamps each
message as it accepts it:

- emails/s: a burst of ``auth.otp.requested`` events published at once; from the
  first publish to the last message accepted by the sink;
- event-to-inbox latency at 50 emails/s offered load: one event every 20 ms
  (open loop, the schedule does not wait for the service), from the publish to
  the sink accepting that message; p50 and p99 against the 1 s p99 target.

Part 2, in the same run (the email rows are their baseline):

- push latency at 100 chat messages/s: ``chat.message.sent`` events paced open loop, each
  to another offline recipient with one registered device, from the publish to the fake
  FCM (a local HTTP server speaking the v1 API, driven through firebase-admin) receiving
  the push; p50 and p99 against the 1 s p99 target;
- webhook deliveries/s: ``WEBHOOK_SUBSCRIPTIONS`` subscriptions to ``payments.*``, a burst
  of deposit events, from the first publish to the last signed POST received by a local
  receiver; against the 200/s target.

Bounded: about a minute on an idle machine, with a hard stop at 180 s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.rows import row

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
TARGET_P99_SECONDS = 1.0
OFFERED_RATE = 50.0  # emails per second
LATENCY_SECONDS = 8.0
BURST = 300
HARD_LIMIT_SECONDS = 180.0
PUSH_RATE = 100.0  # chat messages per second
PUSH_SECONDS = 5.0
TARGET_PUSH_P99_SECONDS = 1.0
WEBHOOK_SUBSCRIPTIONS = 20
WEBHOOK_EVENTS = 40
TARGET_WEBHOOKS_PER_SECOND = 200.0


_row = functools.partial(row, "notification")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class _Arrivals:
    """When the sink accepted the message for each recipient (wall-clock, like the publish time)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def record(self, mail: Any) -> None:  # called on the sink's thread
        now = time.time()
        for recipient in mail.recipients:
            self.at[recipient] = now
        self.loop.call_soon_threadsafe(self.changed.set)

    async def wait_for(self, recipients: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not recipients <= self.at.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = len(recipients - self.at.keys())
                raise TimeoutError(f"{missing} of {len(recipients)} emails never arrived")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
            except TimeoutError:
                continue


class _Receiver:
    """A webhook endpoint on 127.0.0.1 counting what it receives (answers 204)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.changed = asyncio.Event()

    async def start(self) -> _Receiver:
        from aiohttp import web

        from switchyard.testing.servers import AppServer

        async def hook(request: web.Request) -> web.Response:
            await request.read()
            self.count += 1
            self.last = time.time()
            self.changed.set()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.server = await AppServer(app).start()
        return self

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} of {count} webhooks arrived")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.5)
            except TimeoutError:
                continue

    async def stop(self) -> None:
        await self.server.stop()


async def _measure(amqp_url: str, scratch: Path) -> list[dict[str, Any]]:
    from notification_svc import keys
    from notification_svc.app import create_app
    from notification_svc.settings import NotificationSettings
    from switchyard.bus import Bus
    from switchyard.envelope import new_envelope, utcnow
    from switchyard.events.auth import OtpRequested
    from switchyard.events.chat import MessageSent
    from switchyard.events.payments import DepositSucceeded
    from switchyard.metrics import Metrics
    from switchyard.mongo.embedded import EmbeddedMongo
    from switchyard.testing import FakeFcm, SmtpSink
    from switchyard.testing.servers import AppServer, delete_exchange

    name = "bench" + uuid.uuid4().hex[:10]
    arrivals = _Arrivals()
    mongo = EmbeddedMongo(scratch / "mongo")
    await asyncio.to_thread(mongo.start)
    sink = SmtpSink().start()
    sink.handler.on_message = arrivals.record
    fcm = await FakeFcm().start()
    hooks = await _Receiver().start()
    settings = NotificationSettings(
        fcm_credentials_file=fcm.write_credentials(scratch / "fcm.json"),
        fcm_endpoint=fcm.url,
        webhook_allow_private_targets=True,  # the receiver listens on 127.0.0.1
        environment="test",
        amqp_url=amqp_url,
        mongo_url=mongo.url,
        mongo_database=name,
        bus_exchange=f"switchyard.events.{name}",
        bus_queue_prefix=f"{name}.",
        bus_queue_expires_ms=60_000,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        log_level="WARNING",
    )
    server = await AppServer(create_app(settings)).start()
    publisher = Bus(
        url=amqp_url,
        exchange=settings.bus_exchange,
        service="auth",
        metrics=Metrics("auth"),
        queue_prefix=settings.bus_queue_prefix,
    )
    await publisher.connect()

    def event(recipient: str) -> Any:
        data = OtpRequested(
            user_id="usr_" + recipient.split("@")[0],
            email=recipient,
            display_name="Bench User",
            purpose="verify_email",
            code="123456",
            expires_at=utcnow() + dt.timedelta(minutes=10),
        )
        return new_envelope(data, service="auth")

    try:
        # Warm-up: the SMTP connection, the store's first writes, the broker channels.
        warm = {f"warm{n}@example.com" for n in range(10)}
        await asyncio.gather(*(publisher.publish(event(r)) for r in warm))
        await arrivals.wait_for(warm, 15)

        # 1. Throughput: a burst, everything published at once.
        burst = [f"burst{n}@example.com" for n in range(BURST)]
        envelopes = [event(r) for r in burst]
        started = time.time()
        await asyncio.gather(*(publisher.publish(e) for e in envelopes))
        await arrivals.wait_for(set(burst), 20)
        rate = BURST / (max(arrivals.at[r] for r in burst) - started)

        # 2. Latency at the offered rate: one event every 1/rate seconds, open loop.
        count = int(OFFERED_RATE * LATENCY_SECONDS)
        paced = [f"paced{n}@example.com" for n in range(count)]
        sent_at: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        origin = loop.time()
        publishes = []
        for n, recipient in enumerate(paced):
            await asyncio.sleep(max(0.0, origin + n / OFFERED_RATE - loop.time()))
            sent_at[recipient] = time.time()
            publishes.append(asyncio.create_task(publisher.publish(event(recipient))))
        await asyncio.gather(*publishes)
        await arrivals.wait_for(set(paced), 15)
        latencies = [arrivals.at[r] - sent_at[r] for r in paced]
        achieved = count / (max(sent_at.values()) - min(sent_at.values()))

        # 3. Push latency at 100 chat messages/s, each to its own offline recipient.
        chat = Bus(
            url=amqp_url,
            exchange=settings.bus_exchange,
            service="chat",
            metrics=Metrics("chat"),
            queue_prefix=settings.bus_queue_prefix,
        )
        await chat.connect()
        devices = server.app[keys.DEVICES]
        push_count = int(PUSH_RATE * PUSH_SECONDS)
        people = [f"usr_push{n}" for n in range(push_count + 10)]
        for uid in people:
            token = f"tok-{uid}-{uuid.uuid4().hex}"
            fcm.register(token)
            await devices.register(uid, token, "android")

        def message(recipient: str) -> Any:
            return new_envelope(
                MessageSent(
                    message_id=f"m_{uuid.uuid4().hex}",
                    conversation_id=f"c_{recipient}",
                    seq=1,
                    sender_id="usr_sender",
                    recipient_ids=[recipient],
                    offline_recipient_ids=[recipient],
                    preview="Are we still on for Thursday?",
                    sent_at=utcnow(),
                ),
                service="chat",
            )

        await asyncio.gather(*(chat.publish(message(uid)) for uid in people[:10]))  # warm-up
        await fcm.wait_for(10, 20)
        pushed_at: dict[str, float] = {}
        origin = loop.time()
        publishes = []
        for n, uid in enumerate(people[10:]):
            await asyncio.sleep(max(0.0, origin + n / PUSH_RATE - loop.time()))
            pushed_at[uid] = time.monotonic()
            publishes.append(asyncio.create_task(chat.publish(message(uid))))
        await asyncio.gather(*publishes)
        await fcm.wait_for(10 + push_count, 90)
        received = {p.token.split("-")[1]: p.received_at for p in fcm.received}
        push_latencies = [received[uid] - pushed_at[uid] for uid in pushed_at]
        push_achieved = push_count / (max(pushed_at.values()) - min(pushed_at.values()))
        await chat.close()

        # 4. Webhook fan-out: subscriptions × a burst of events.
        store = server.app[keys.WEBHOOK_STORE]
        for n in range(WEBHOOK_SUBSCRIPTIONS):
            await store.create(
                owner_id=f"usr_admin{n}",
                url=hooks.url,
                event_types=["payments.*"],
                secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                sees_all=True,
            )
        pay = Bus(
            url=amqp_url,
            exchange=settings.bus_exchange,
            service="payments",
            metrics=Metrics("payments"),
            queue_prefix=settings.bus_queue_prefix,
        )
        await pay.connect()

        def deposit() -> Any:
            return new_envelope(
                DepositSucceeded(
                    deposit_id=f"dp_{uuid.uuid4().hex}",
                    user_id="usr_payer",
                    amount={"amount": 20000, "currency": "USD"},  # type: ignore[arg-type]
                    provider="test",
                    succeeded_at=utcnow(),
                ),
                service="payments",
            )

        await server.app[keys.DIRECTORY].record_profile(
            "usr_payer", email="payer@example.com", display_name="Payer", as_of=utcnow()
        )
        await pay.publish(deposit())  # warm-up: connections to the receiver
        await hooks.wait_for(WEBHOOK_SUBSCRIPTIONS, 20)
        hooks_started = time.time()
        await asyncio.gather(*(pay.publish(deposit()) for _ in range(WEBHOOK_EVENTS)))
        deliveries = WEBHOOK_SUBSCRIPTIONS * WEBHOOK_EVENTS
        await hooks.wait_for(WEBHOOK_SUBSCRIPTIONS + deliveries, 40)
        webhook_rate = deliveries / (hooks.last - hooks_started)
        await pay.close()
    finally:
        await publisher.close()
        await server.stop()
        await fcm.stop()
        await hooks.stop()
        sink.stop()
        await delete_exchange(amqp_url, settings.bus_exchange)
        await asyncio.to_thread(mongo.stop)

    p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    setting = (
        f"1 replica, {settings.smtp_connections} SMTP connection(s), embedded store, "
        f"real RabbitMQ, aiosmtpd sink in-process; load average {load} on {os.cpu_count()} cores"
    )
    return [
        _row(
            "emails/s, event published → SMTP accepted (burst)",
            round(rate, 1),
            OFFERED_RATE,
            "emails/s",
            f"{BURST} auth.otp.requested events at once; {setting}; baseline = the 50/s target",
        ),
        _row(
            f"event → inbox p50 at {OFFERED_RATE:.0f} emails/s",
            round(p50 * 1000, 1),
            None,
            "ms",
            f"{count} events paced over {LATENCY_SECONDS:.0f} s (achieved {achieved:.1f}/s); "
            f"mean {statistics.fmean(latencies) * 1000:.1f} ms",
        ),
        _row(
            f"event → inbox p99 at {OFFERED_RATE:.0f} emails/s",
            round(p99 * 1000, 1),
            TARGET_P99_SECONDS * 1000,
            "ms",
            f"target p99 < {TARGET_P99_SECONDS * 1000:.0f} ms; max {max(latencies) * 1000:.1f} ms",
        ),
        _row(
            f"chat.message.sent → push p50 at {PUSH_RATE:.0f} msgs/s",
            round(_percentile(push_latencies, 0.50) * 1000, 1),
            round(p50 * 1000, 1),
            "ms",
            f"{push_count} messages paced over {PUSH_SECONDS:.0f} s (achieved "
            f"{push_achieved:.1f}/s), fake FCM via firebase-admin; baseline = email p50 above",
        ),
        _row(
            f"chat.message.sent → push p99 at {PUSH_RATE:.0f} msgs/s",
            round(_percentile(push_latencies, 0.99) * 1000, 1),
            round(p99 * 1000, 1),
            "ms",
            f"target p99 < {TARGET_PUSH_P99_SECONDS * 1000:.0f} ms; baseline = email p99 above; "
            f"max {max(push_latencies) * 1000:.1f} ms",
        ),
        _row(
            "webhook deliveries/s (fan-out to a local receiver)",
            round(webhook_rate, 1),
            round(rate, 1),
            "deliveries/s",
            f"{WEBHOOK_EVENTS} events × {WEBHOOK_SUBSCRIPTIONS} subscriptions, signed, each "
            f"recorded; target ≥ {TARGET_WEBHOOKS_PER_SECOND:.0f}/s; baseline = emails/s above",
        ),
    ]


async def run() -> list[dict[str, Any]]:
    import aio_pika

    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    try:
        connection = await asyncio.wait_for(aio_pika.connect(amqp_url), 10)
        await connection.close()
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        return [_row("emails/s", None, None, "emails/s", f"skipped: no broker ({error!r})")]
    with tempfile.TemporaryDirectory() as scratch:
        return await asyncio.wait_for(_measure(amqp_url, Path(scratch)), HARD_LIMIT_SECONDS)


if __name__ == "__main__":
    for row in asyncio.run(run()):
        print(row)

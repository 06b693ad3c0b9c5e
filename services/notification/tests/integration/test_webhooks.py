"""Outgoing webhooks against real local receivers that verify the Standard Webhooks signature
with the ``standardwebhooks`` library; retries on the real broker; the SSRF guard."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from notification_svc import keys
from notification_svc.adapters.webhook_http import WebhookSender
from switchyard.envelope import Envelope, new_envelope, utcnow
from switchyard.events.payments import DepositSucceeded
from switchyard.testing import AppServer, eventually, service_bus

from ..support import event, registered, user_id

pytestmark = pytest.mark.integration
WEBHOOKS = "/api/v1/notifications/webhooks"


@dataclass
class Receiver:
    """An integrator's endpoint: verifies every request's signature independently."""

    statuses: list[int] = field(default_factory=list)  # answers in order, then 200
    delay: float = 0.0
    hold: asyncio.Event | None = None  # answers only once this is set
    redirect_to: str | None = None
    secret: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    verified: list[dict[str, Any]] = field(default_factory=list)
    server: AppServer | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.server = await AppServer(app).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.url}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append({"headers": dict(request.headers), "at": time.monotonic()})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hold is not None:
            await self.hold.wait()
        assert self.secret is not None
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.Response(status=401, text="bad signature")
        if self.redirect_to:
            raise web.HTTPFound(self.redirect_to)
        status = self.statuses.pop(0) if self.statuses else 200
        if 200 <= status < 300:
            self.verified.append({"id": request.headers["webhook-id"], "payload": payload})
        return web.Response(status=status, text="x" * 5000)

    async def stop(self) -> None:
        if self.server:
            await self.server.stop()


@pytest.fixture
async def receivers():  # type: ignore[no-untyped-def]
    made: list[Receiver] = []

    async def make(**options: Any) -> Receiver:
        receiver = await Receiver(**options).start()
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        await receiver.stop()


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def payments(settings_overrides):  # type: ignore[no-untyped-def]
    bus = service_bus(settings_overrides, "payments")
    await bus.connect()
    yield bus
    await bus.close()


async def until(condition: Any, timeout: float) -> None:
    async def check() -> bool:
        return bool(condition())

    await eventually(check, timeout)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def deposit(uid: str) -> Envelope:
    return new_envelope(
        DepositSucceeded(
            deposit_id=f"dp_{uuid.uuid4().hex}",
            user_id=uid,
            amount={"amount": 20000, "currency": "USD"},  # type: ignore[arg-type]
            provider="test",
            succeeded_at=utcnow(),
        ),
        service="payments",
    )


async def subscribe(service, http, token: str, receiver: Receiver, types=("payments.*",)):  # type: ignore[no-untyped-def]
    async with http.post(
        service.url + WEBHOOKS,
        json={"url": receiver.url, "event_types": list(types)},
        headers=bearer(token),
    ) as response:
        body = await response.json()
        assert response.status == 201, body
    assert body["secret"].startswith("whsec_")
    receiver.secret = body["secret"]
    return body


async def known_user(service, name: str = "Ada") -> str:  # type: ignore[no-untyped-def]
    uid = user_id()
    await service.publish(event(registered(uid, display_name=name)))

    async def known() -> bool:
        return await service.app[keys.DIRECTORY].get(uid) is not None

    await eventually(known, 10)
    return uid


WEBHOOK_SETTINGS = {
    "webhook_allow_private_targets": True,  # the receivers listen on 127.0.0.1
    "webhook_retry_delays": [0.3, 0.6, 0.6, 0.6],
}


async def test_a_signed_event_reaches_its_owner_once_and_others_events_do_not(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    ada, grace = await known_user(service, "Ada"), await known_user(service, "Grace")
    own, admin = await receivers(), await receivers()
    created = await subscribe(service, http, jwks_server.token(ada, ["customer"]), own)
    assert created["scope"] == "own"
    admin_sub = await subscribe(service, http, jwks_server.token("adm", ["admin"]), admin, ["*"])
    assert admin_sub["scope"] == "all"

    mine, theirs = deposit(ada), deposit(grace)
    await payments.publish(mine)
    await payments.publish(theirs)
    await payments.publish(mine)  # a duplicate: still one delivery

    await until(lambda: len(admin.verified) >= 2, 10)
    await until(lambda: len(own.verified) >= 1, 10)
    await asyncio.sleep(1.0)
    assert [v["id"] for v in own.verified] == [mine.id]  # webhook-id is the event id
    payload = own.verified[0]["payload"]
    assert payload["specversion"] == "1.0" and payload["type"] == "payments.deposit.succeeded"
    assert payload["data"]["user_id"] == ada and payload["id"] == mine.id
    assert sorted(v["id"] for v in admin.verified) == sorted([mine.id, theirs.id])

    log: list[dict[str, Any]] = []

    async def logged() -> bool:  # the sender records the answer after the receiver gave it
        nonlocal log
        async with http.get(
            service.url + f"{WEBHOOKS}/{created['id']}/deliveries",
            headers=bearer(jwks_server.token(ada, ["customer"])),
        ) as response:
            log = (await response.json())["items"]
        return all(d["status"] == "delivered" for d in log)

    await eventually(logged, 10)
    assert [(d["event_id"], d["status"], d["attempts"], d["response_code"]) for d in log] == [
        (mine.id, "delivered", 1, 200)
    ]
    assert len(log[0]["response_body"]) == 1024  # not more than 1 KiB kept
    # Another user sees neither the subscription nor its log.
    other = bearer(jwks_server.token(grace, ["customer"]))
    async with http.get(service.url + f"{WEBHOOKS}/{created['id']}/deliveries", headers=other) as r:
        assert r.status == 404


async def test_500_then_200_is_retried_and_delivered_once_and_redelivery_resends(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    ada = await known_user(service)
    receiver = await receivers(statuses=[500])
    sub = await subscribe(service, http, jwks_server.token(ada, ["customer"]), receiver)
    envelope = deposit(ada)
    await payments.publish(envelope)
    await until(lambda: len(receiver.verified) == 1, 10)
    headers = bearer(jwks_server.token(ada, ["customer"]))
    items: list[dict[str, Any]] = []

    async def recorded() -> bool:  # the sender records the answer after the receiver gave it
        nonlocal items
        async with http.get(
            service.url + f"{WEBHOOKS}/{sub['id']}/deliveries", headers=headers
        ) as r:
            items = (await r.json())["items"]
        return [item["status"] for item in items] == ["delivered"]

    await eventually(recorded, 10)
    await asyncio.sleep(1.0)  # room for a wrong third attempt
    assert len(receiver.requests) == 2 and len(receiver.verified) == 1
    [logged] = items
    assert (logged["status"], logged["attempts"]) == ("delivered", 2)
    async with http.post(
        service.url + f"{WEBHOOKS}/{sub['id']}/deliveries/{logged['id']}/redeliver",
        headers=headers,
    ) as r:
        again = await r.json()
        assert r.status == 200
    assert (again["status"], again["attempts"]) == ("delivered", 3)
    assert [v["id"] for v in receiver.verified] == [envelope.id, envelope.id]  # same webhook-id


async def test_410_disables_at_once_and_the_owner_is_emailed(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    ada = await known_user(service)
    receiver = await receivers(statuses=[410])
    sub = await subscribe(service, http, jwks_server.token(ada, ["customer"]), receiver)
    await payments.publish(deposit(ada))
    store = service.app[keys.WEBHOOK_STORE]

    async def disabled() -> bool:
        found = await store.get(sub["id"])
        return found is not None and found.status == "disabled"

    await eventually(disabled, 10)
    mail = await smtp_sink.wait_for(
        lambda m: ada in m.recipients[0] and "webhook" in m.subject, timeout=15
    )
    assert "webhook was disabled" in mail.subject and receiver.url in mail.text
    assert "410 Gone" in mail.text
    await payments.publish(deposit(ada))
    await asyncio.sleep(1.0)
    assert len(receiver.requests) == 1  # nothing more goes to a disabled endpoint


async def test_an_endpoint_failing_past_the_limit_is_disabled_and_the_owner_emailed(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    service = await start_service(
        smtp_port=smtp_sink.port,
        webhook_allow_private_targets=True,
        webhook_retry_delays=[0.4, 0.4, 0.4, 0.4, 0.4, 0.4],
        webhook_disable_after_seconds=1.0,  # 24 h, shortened
    )
    ada = await known_user(service)
    receiver = await receivers(statuses=[503] * 100)
    sub = await subscribe(service, http, jwks_server.token(ada, ["customer"]), receiver)
    await payments.publish(deposit(ada))
    mail = await smtp_sink.wait_for(
        lambda m: ada in m.recipients[0] and "webhook" in m.subject, timeout=20
    )
    assert "kept failing" in mail.text
    found = await service.app[keys.WEBHOOK_STORE].get(sub["id"])
    assert found is not None and (found.status, found.disabled_reason) == ("disabled", "failing")
    metrics = service.app[keys.NOTIFICATION_METRICS]
    assert metrics.value("notification_webhooks_disabled_total", reason="failing") == 1


async def test_a_slow_endpoint_does_not_hold_up_another_subscription(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    ada = await known_user(service)
    # The slow endpoint answers only once the fast one has its delivery (no race with a
    # fixed delay on a loaded machine): a sender that waited for it never delivers to fast.
    slow, fast = await receivers(hold=asyncio.Event()), await receivers()
    token = jwks_server.token(ada, ["customer"])
    await subscribe(service, http, token, slow)
    await subscribe(service, http, token, fast)
    await payments.publish(deposit(ada))
    await until(lambda: len(slow.requests) == 1, 10)  # slow holds its request
    await until(lambda: len(fast.verified) == 1, 10)
    assert slow.verified == []
    assert slow.hold is not None
    slow.hold.set()
    await until(lambda: len(slow.verified) == 1, 15)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://[fd00:ec2::254]/",
        "http://localhost:9/hook",  # a name resolving to loopback
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
    ],
)
async def test_private_and_odd_targets_are_refused_at_registration(
    start_service, smtp_sink, http, jwks_server, url
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    async with http.post(
        service.url + WEBHOOKS,
        json={"url": url, "event_types": ["*"]},
        headers=bearer(jwks_server.token(user_id(), ["customer"])),
    ) as response:
        body = await response.json()
    assert response.status == 422, body
    assert body["errors"][0]["code"] in {"target-not-allowed", "invalid-url"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_the_guard_refuses_at_connect_time_whatever_was_registered(
    receivers, host: str
) -> None:
    """DNS rebinding: a name that was public at registration resolves to loopback later.
    The check runs when the connection is made, so the request never leaves."""
    receiver = await receivers()
    receiver.secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    port = receiver.url.split(":")[2].split("/")[0]
    sender = WebhookSender(allow_private=False, timeout=2)
    try:
        result = await sender.post(
            f"http://{host}:{port}/hook",
            secret=receiver.secret,
            msg_id="evt-1",
            payload=json.dumps({"x": 1}),
            at=utcnow(),
        )
    finally:
        await sender.close()
    assert result.refused and result.status_code is None
    assert receiver.requests == []


async def test_redirects_are_not_followed(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    ada = await known_user(service)
    target = await receivers()
    bouncer = await receivers(redirect_to=target.url)
    sub = await subscribe(service, http, jwks_server.token(ada, ["customer"]), bouncer)
    target.secret = bouncer.secret
    await payments.publish(deposit(ada))
    await until(lambda: len(bouncer.requests) >= 2, 10)  # retried: a 302 is a failure
    assert target.requests == []
    async with http.get(
        service.url + f"{WEBHOOKS}/{sub['id']}/deliveries",
        headers=bearer(jwks_server.token(ada, ["customer"])),
    ) as r:
        [logged] = (await r.json())["items"]
    assert logged["response_code"] == 302 and logged["status"] != "delivered"


async def test_copies_of_one_event_racing_and_a_crashed_claim_still_deliver_once(
    start_service, smtp_sink, receivers, http, jwks_server, payments
) -> None:
    """Five copies of one event at once (redeliveries after a dropped channel) post once;
    a claim left by a consumer that died mid-attempt is taken over after its lease."""
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    ada = await known_user(service)
    receiver = await receivers(delay=0.5)
    sub = await subscribe(service, http, jwks_server.token(ada, ["customer"]), receiver)
    envelope = deposit(ada)
    await asyncio.gather(*(payments.publish(envelope) for _ in range(5)))
    await until(lambda: len(receiver.verified) == 1, 10)
    await asyncio.sleep(2.0)
    assert len(receiver.requests) == 1

    # A consumer crashed while holding a claim: the record says `delivering`, lease expired.
    store = service.app[keys.WEBHOOK_STORE]
    subscription = await store.get(sub["id"])
    crashed = deposit(ada)
    record, _ = await store.open(
        subscription,
        event_id=crashed.id,
        event_type=crashed.type,
        payload=crashed.to_json().decode(),
    )
    from datetime import timedelta

    taken = await store.claim(record.id, owner="dead-consumer", lease=timedelta(milliseconds=1))
    assert taken is not None and taken.status == "delivering"
    await asyncio.sleep(0.05)
    await payments.publish(crashed)  # the broker redelivers the event to a live consumer
    await until(lambda: len(receiver.verified) == 2, 10)
    await asyncio.sleep(1.0)
    assert [v["id"] for v in receiver.verified] == [envelope.id, crashed.id]

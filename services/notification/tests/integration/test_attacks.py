"""Adversarial checks of notification part 2 from outside: the SSRF guard with odd address
spellings, bounded webhook reads, IDOR on devices / inbox / webhooks, forged unsubscribe
links, mandatory categories and admin-only broadcasts — all through the running service."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from email.utils import getaddresses
from typing import Any

import aio_pika
import aiohttp
import pytest

from notification_svc import keys
from notification_svc.adapters.webhook_http import WebhookSender
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.auth import UserRegistered
from switchyard.testing import Stopwatch, eventually, service_bus

from ..support import (
    chat_bus,
    deleted,
    event,
    message_sent,
    parked,
    registered,
    updated,
    user_id,
)
from .test_push import device, fcm_token, people
from .test_webhooks import (
    WEBHOOK_SETTINGS,
    Receiver,
    deposit,
    known_user,
    subscribe,
    until,
)

pytestmark = pytest.mark.integration
BASE = "/api/v1/notifications"
WEBHOOKS = f"{BASE}/webhooks"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **options: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **options) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


# -- SSRF ----------------------------------------------------------------------------------------

INTERNAL_SPELLINGS = [
    "http://2130706433:9/hook",  # 127.0.0.1 in decimal
    "http://0x7f000001:9/hook",  # hex
    "http://0177.0.0.1:9/hook",  # octal
    "http://127.1:9/hook",  # short form
    "http://0:9/hook",  # 0.0.0.0
    "http://[::]:9/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/",  # CGNAT (cloud metadata on some providers)
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[::7f00:1]:9/hook",  # IPv4-compatible IPv6 of 127.0.0.1
    "http://[::ffff:0:7f00:1]:9/hook",  # IPv4-translated (SIIT) of 127.0.0.1
    "http://[64:ff9b:1::a00:1]/",  # local-use NAT64 (RFC 8215) of 10.0.0.1
    "http://[fec0::1]/",  # site-local
    "http://[fe80::1%25lo]:9/hook",  # link-local with a zone
    "http://localhost.:9/hook",  # trailing dot
    "http://" + "a" * 2100 + ".example/",  # far too long
]


async def test_internal_addresses_in_any_spelling_are_refused_at_registration(
    start_service, smtp_sink, http, jwks_server
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    auth = bearer(jwks_server.token(user_id(), ["customer"]))
    accepted = []
    for url in INTERNAL_SPELLINGS:
        status, body = await call(
            http,
            "POST",
            service.url + WEBHOOKS,
            json={"url": url, "event_types": ["*"]},
            headers=auth,
        )
        if status != 422:
            accepted.append((url[:60], status, body))
    assert accepted == []


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:7f00:1]"]
)
async def test_the_connect_time_guard_sees_through_numeric_spellings(host: str) -> None:
    """Whatever got stored (a rebinding name, a spelling), the connection is never made."""
    server = await asyncio.start_server(_count_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = WebhookSender(allow_private=False, timeout=2)
    try:
        result = await sender.post(
            f"http://{host}:{port}/hook", secret=SECRET, msg_id="e1", payload="{}", at=utcnow()
        )
    finally:
        await sender.close()
        server.close()
    assert result.status_code is None and result.error
    assert _CONNECTIONS.get(port, 0) == 0


_CONNECTIONS: dict[int, int] = {}
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


async def _count_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    port = writer.get_extra_info("sockname")[1]
    _CONNECTIONS[port] = _CONNECTIONS.get(port, 0) + 1
    writer.close()


# -- bounded reads and timeouts --------------------------------------------------------------------


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    await asyncio.sleep(30)  # never answers
    writer.close()


async def _endless_slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
    try:
        for _ in range(300):
            writer.write(b"x" * 64)
            await writer.drain()
            await asyncio.sleep(0.1)
    except (ConnectionError, OSError):
        pass  # the sender hung up: what we want
    writer.close()


async def _huge_fast_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"y" * 65536
    try:
        for _ in range(2000):  # 128 MiB if read to the end
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    writer.close()


@pytest.mark.parametrize(
    ("handler", "ok"), [(_hang, False), (_endless_slow_body, True), (_huge_fast_body, False)]
)
async def test_hanging_slow_and_huge_targets_cost_bounded_time_and_memory(
    handler: Any, ok: bool
) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = WebhookSender(allow_private=True, timeout=1.5)
    clock = Stopwatch()
    try:
        result = await sender.post(
            f"http://127.0.0.1:{port}/hook", secret=SECRET, msg_id="e1", payload="{}", at=utcnow()
        )
    finally:
        await sender.close()
        server.close()
    # The 1.5 s timeout ends it (the slow body never ends by itself); the bound is on the
    # time the CPUs were free, as the machine is shared with other test workers.
    assert clock.within(3.0), clock.report()
    assert result.ok is ok
    assert result.body is None or len(result.body) <= 1024


# -- IDOR and validation through the HTTP API ----------------------------------------------------


async def test_other_users_devices_inbox_and_webhooks_are_out_of_reach(
    start_service, smtp_sink, http, jwks_server
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    ada, eve = user_id(), user_id()
    as_ada = bearer(jwks_server.token(ada, ["customer"]))
    as_eve = bearer(jwks_server.token(eve, ["customer"]))
    url = service.url

    # Devices: Eve cannot delete Ada's token; Ada keeps at most 10.
    token = "fcm-ada-" + "a" * 40
    status, _ = await call(
        http,
        "POST",
        f"{url}{BASE}/devices",
        json={"token": token, "platform": "android"},
        headers=as_ada,
    )
    assert status == 201
    status, problem = await call(http, "DELETE", f"{url}{BASE}/devices/{token}", headers=as_eve)
    assert status == 404 and problem["status"] == 404
    for n in range(12):
        status, _ = await call(
            http,
            "POST",
            f"{url}{BASE}/devices",
            json={"token": f"fcm-ada-{n:02d}-" + "b" * 40, "platform": "web"},
            headers=as_ada,
        )
        assert status == 201
    status, body = await call(http, "GET", f"{url}{BASE}/devices", headers=as_ada)
    assert len(body["items"]) == 10
    status, _ = await call(
        http,
        "POST",
        f"{url}{BASE}/devices",
        json={"token": "x\r\nInjected: 1" + "c" * 20, "platform": "android"},
        headers=as_ada,
    )
    assert status == 422

    # Inbox: Eve can neither read nor mark Ada's item; a forged cursor is a 400.
    item, _ = await service.app[keys.INBOX].add(
        user_id=ada, event_id="evt-ada-1", category="payments", title="t", body="b", data={}
    )
    status, _ = await call(http, "POST", f"{url}{BASE}/{item.id}/read", headers=as_eve)
    assert status == 404
    status, body = await call(http, "GET", f"{url}{BASE}", headers=as_eve)
    assert body["items"] == [] and body["unread_count"] == 0
    status, body = await call(http, "GET", f"{url}{BASE}", headers=as_ada)
    assert [i["id"] for i in body["items"]] == [item.id] and body["items"][0]["read_at"] is None
    for cursor in ["not-a-cursor", base64.urlsafe_b64encode(b'{"after":{"$gt":""}}').decode()]:
        status, problem = await call(
            http, "GET", f"{url}{BASE}", params={"cursor": cursor}, headers=as_ada
        )
        assert status == 400, problem

    # Webhooks: the secret is in the creation answer only; Eve cannot see or delete it.
    status, created = await call(
        http,
        "POST",
        url + WEBHOOKS,
        json={"url": "https://93.184.216.34/hook", "event_types": ["payments.*"]},
        headers=as_ada,
    )
    assert status == 201 and created["secret"].startswith("whsec_")
    status, listed = await call(http, "GET", url + WEBHOOKS, headers=as_ada)
    status2, one = await call(http, "GET", f"{url}{WEBHOOKS}/{created['id']}", headers=as_ada)
    assert created["secret"] not in json.dumps([listed, one])
    for method in ("GET", "DELETE"):
        status, _ = await call(http, method, f"{url}{WEBHOOKS}/{created['id']}", headers=as_eve)
        assert status == 404
    status, listed = await call(http, "GET", url + WEBHOOKS, headers=as_eve)
    assert listed["items"] == []


async def test_mandatory_categories_forged_unsubscribes_and_broadcasts(
    start_service, smtp_sink, http, jwks_server
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    ada, eve = user_id(), user_id()
    as_ada = bearer(jwks_server.token(ada, ["customer"]))
    url = service.url

    for category in ("security", "signup"):
        status, problem = await call(
            http,
            "PUT",
            f"{url}{BASE}/preferences",
            json={"preferences": {category: {"email": False}}},
            headers=as_ada,
        )
        assert status == 422 and problem["errors"][0]["code"] == "cannot-opt-out"

    links = service.app[keys.EMAIL_CHANNEL].unsubscribe
    genuine = links.token(eve, "marketing")
    body, _, mac = genuine.partition(".")
    forged_body = (
        base64.urlsafe_b64encode(
            json.dumps({"u": ada, "c": "marketing"}, separators=(",", ":")).encode()
        )
        .decode()
        .rstrip("=")
    )
    for token in (
        f"{forged_body}.{mac}",  # another user under Eve's signature
        f"{body}.{mac[:-2]}AA",
        body,
        links.token(ada, "security"),  # signed, but for an always-on category
        "",
        "a." * 600,
    ):
        status, _ = await call(http, "POST", f"{url}{BASE}/unsubscribe", params={"token": token})
        assert status == 400, token[:40]
    status, prefs = await call(http, "GET", f"{url}{BASE}/preferences", headers=as_ada)
    assert prefs["preferences"]["marketing"]["email"] is False  # opt-in: never on by default
    assert prefs["preferences"]["chat"]["email"] is True
    # A genuine link replayed twice does the same one thing.
    for _ in range(2):
        status, done = await call(
            http, "POST", f"{url}{BASE}/unsubscribe", params={"token": genuine}
        )
        assert status == 200 and done["unsubscribed"]["category"] == "marketing"

    broadcast = {"role": "customer", "category": "marketing", "title": "t", "body": "b"}
    status, _ = await call(http, "POST", f"{url}{BASE}/broadcast", json=broadcast, headers=as_ada)
    assert status == 403
    as_admin = bearer(jwks_server.token(user_id(), ["admin"]))
    for changed in ({"body": "b" * 100_000}, {"role": "$where"}, {"category": "security2"}):
        status, problem = await call(
            http, "POST", f"{url}{BASE}/broadcast", json={**broadcast, **changed}, headers=as_admin
        )
        assert status == 422, problem


async def test_a_user_cannot_stack_up_webhooks_without_limit(
    start_service, smtp_sink, http, jwks_server
) -> None:
    """Every subscription multiplies its owner's events into outgoing requests (and adds a
    metrics label): one user may hold a bounded number."""
    service = await start_service(smtp_port=smtp_sink.port)
    as_ada = bearer(jwks_server.token(user_id(), ["customer"]))
    hook = {"url": "https://93.184.216.34/hook", "event_types": ["*"]}
    created = []
    for _ in range(20):
        status, body = await call(http, "POST", service.url + WEBHOOKS, json=hook, headers=as_ada)
        assert status == 201, body
        created.append(body["id"])
    status, problem = await call(http, "POST", service.url + WEBHOOKS, json=hook, headers=as_ada)
    assert status == 409 and problem["type"].endswith("too-many-webhooks"), problem
    status, _ = await call(http, "DELETE", f"{service.url}{WEBHOOKS}/{created[0]}", headers=as_ada)
    assert status == 204
    status, _ = await call(http, "POST", service.url + WEBHOOKS, json=hook, headers=as_ada)
    assert status == 201


async def test_an_admin_demoted_after_subscribing_no_longer_sees_everyones_events(
    start_service, smtp_sink, http, jwks_server, settings_overrides
) -> None:
    """A subscription an admin made sees all events only while its owner is an admin: the
    roles auth publishes later count, not the token presented at creation."""
    service = await start_service(smtp_port=smtp_sink.port, **WEBHOOK_SETTINGS)
    boss, grace = user_id(), await known_user(service, "Grace")
    await service.publish(
        event(
            UserRegistered(
                user_id=boss,
                email=f"{boss}@example.com",
                display_name="Boss",
                roles=["admin"],
                registered_at=utcnow() - dt.timedelta(minutes=5),
            )
        )
    )
    directory = service.app[keys.DIRECTORY]

    async def admin_known() -> bool:
        found = await directory.get(boss)
        return found is not None and found.has_role("admin")

    await eventually(admin_known, 10)
    receiver = await Receiver().start()
    payments = service_bus(settings_overrides, "payments")
    await payments.connect()
    try:
        created = await subscribe(
            service, http, jwks_server.token(boss, ["admin"]), receiver, ["payments.*"]
        )
        assert created["scope"] == "all"
        await service.publish(
            event(updated(boss, email=f"{boss}@example.com", display_name="Boss", at=utcnow()))
        )

        async def demoted() -> bool:
            found = await directory.get(boss)
            return found is not None and not found.has_role("admin")

        await eventually(demoted, 10)
        theirs, mine = deposit(grace), deposit(boss)
        await payments.publish(theirs)
        await payments.publish(mine)
        await until(lambda: len(receiver.verified) >= 1, 10)
        await asyncio.sleep(1.0)
        assert [v["id"] for v in receiver.verified] == [mine.id]
    finally:
        await payments.close()
        await receiver.stop()


async def test_a_poison_payment_event_is_parked_with_its_reason_and_the_next_one_flows(
    start_service, smtp_sink, settings_overrides
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    ada = await known_user(service)
    broken = json.loads(deposit(ada).to_json())
    del broken["data"]["amount"]
    await service.publisher.exchange.publish(
        aio_pika.Message(json.dumps(broken).encode(), message_id=broken["id"]),
        routing_key="payments.deposit.succeeded",
    )
    for handler in ("activity", "webhooks"):
        [message] = await parked(settings_overrides["amqp_url"], service.queue(handler))
        assert message.reason == "poison" and "amount" in (message.exception_message or "")
    good = deposit(ada)
    await service.publish(good)
    inbox = service.app[keys.INBOX]

    async def arrived() -> bool:
        items, _ = await inbox.page(ada, limit=10, after=None, unread=None)
        return any(i.category == "payments" for i in items)

    await eventually(arrived, 10)


async def test_a_long_chat_message_from_a_long_name_fits_fcms_4_kib(
    start_service, smtp_sink, fcm_settings, fake_fcm, http, jwks_server, settings_overrides
) -> None:
    """FCM refuses a message over 4096 bytes: a 140-character preview of 4-byte characters from
    a sender with an absurdly long name must still go out, shortened."""
    service = await start_service(smtp_port=smtp_sink.port, **fcm_settings)
    [grace] = await people(service, "Grace")
    ada = user_id()
    await service.publish(event(registered(ada, display_name="🦄" * 3000)))
    await people(service)  # (directory settled)

    async def ada_known() -> bool:
        return await service.app[keys.DIRECTORY].get(ada) is not None

    await eventually(ada_known, 10)
    token = fcm_token()
    fake_fcm.register(token)
    await device(service, http, jwks_server, grace, token)
    chat = chat_bus(settings_overrides)
    await chat.connect()
    try:
        data = message_sent(f"c_{uuid.uuid4().hex}", 1, ada, [grace], preview="🦄" * 140)
        await chat.publish(new_envelope(data, service="chat"))
        [push] = await fake_fcm.wait_for(1)
    finally:
        await chat.close()
    payload = {"notification": push.notification, "data": push.data}
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    assert size <= 4096, size
    assert push.notification["body"].startswith("🦄" * 100)


async def test_a_display_name_cannot_add_headers_or_recipients_to_a_payment_email(
    start_service, smtp_sink, settings_overrides
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    eve = user_id()
    name = 'Eve\r\nBcc: spy@evil.test\r\nSubject: pwned\n"x" <boss@evil.test>, spy2@evil.test'
    await service.publish(event(registered(eve, display_name=name)))

    async def known() -> bool:
        return await service.app[keys.DIRECTORY].get(eve) is not None

    await eventually(known, 10)
    payments = service_bus(settings_overrides, "payments")
    await payments.connect()
    try:
        await payments.publish(deposit(eve))
        mail = await smtp_sink.wait_for(lambda m: f"{eve}@example.com" in m.recipients, 15)
    finally:
        await payments.close()
    assert mail.recipients == [f"{eve}@example.com"]
    assert mail.message["Bcc"] is None and mail.message.get_all("Subject") == [mail.subject]
    assert "pwned" not in mail.subject
    [(_, address)] = getaddresses([str(mail.message["To"])])
    assert address == f"{eve}@example.com"


async def test_malformed_hosts_and_ports_are_a_422_not_a_500(
    start_service, smtp_sink, http, jwks_server
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    auth = bearer(jwks_server.token(user_id(), ["customer"]))
    answers = {}
    for url in (
        "http://" + "a" * 64 + ".example.com/hook",  # a DNS label over 63 characters
        "http://a..example.com/hook",  # an empty label
        "http://93.184.216.34:0/hook",
        "http://93.184.216.34:99999/hook",
        "http://exa mple.com/hook",
    ):
        status, body = await call(
            http,
            "POST",
            service.url + WEBHOOKS,
            json={"url": url, "event_types": ["*"]},
            headers=auth,
        )
        answers[url[:40]] = (status, (body or {}).get("errors", [{}])[0].get("code"))
    assert all(status == 422 for status, _ in answers.values()), answers


async def test_a_broadcast_skips_users_whose_role_was_taken_away(
    start_service, smtp_sink, http, jwks_server
) -> None:
    """Roles come from auth's events (newest wins), not from a token or an older event."""
    service = await start_service(smtp_port=smtp_sink.port)
    kept, demoted = user_id(), user_id()
    for uid in (kept, demoted):
        await service.publish(
            event(
                UserRegistered(
                    user_id=uid,
                    email=f"{uid}@example.com",
                    display_name="C",
                    roles=["contractor"],
                    registered_at=utcnow() - dt.timedelta(minutes=5),
                )
            )
        )
    await service.publish(
        event(updated(demoted, email=f"{demoted}@example.com", display_name="C", at=utcnow()))
    )
    directory = service.app[keys.DIRECTORY]

    async def settled() -> bool:
        a, b = await directory.get(kept), await directory.get(demoted)
        return bool(a and b and a.has_role("contractor") and not b.has_role("contractor"))

    await eventually(settled, 10)
    as_admin = bearer(jwks_server.token(user_id(), ["admin"]))
    status, created = await call(
        http,
        "POST",
        f"{service.url}{BASE}/broadcast",
        json={"role": "contractor", "category": "files", "title": "Hi", "body": "News"},
        headers=as_admin,
    )
    assert status == 202, created

    async def done() -> bool:
        _, found = await call(
            http, "GET", f"{service.url}{BASE}/broadcasts/{created['id']}", headers=as_admin
        )
        return bool(found["status"] == "done")

    await eventually(done, 15)
    inbox = service.app[keys.INBOX]
    got = {
        uid: (await inbox.page(uid, limit=10, after=None, unread=None))[0]
        for uid in (kept, demoted)
    }
    assert [i.title for i in got[kept]] == ["Hi"]
    assert got[demoted] == []


async def test_an_old_unsubscribe_link_of_an_erased_user_stores_nothing_again(
    start_service, smtp_sink, http
) -> None:
    """Erasure removed the user's preferences; a link in an old mail must not bring a record
    of them back."""
    service = await start_service(smtp_port=smtp_sink.port)
    gone = await known_user(service, "Gone")
    token = service.app[keys.EMAIL_CHANNEL].unsubscribe.token(gone, "payments")
    await service.publish(event(deleted(gone)))
    directory = service.app[keys.DIRECTORY]

    async def erased() -> bool:
        found = await directory.get(gone)
        return found is not None and found.deleted

    await eventually(erased, 10)
    await asyncio.sleep(0.5)  # the erasure handlers of the other stores
    status, _ = await call(
        http, "POST", f"{service.url}{BASE}/unsubscribe", params={"token": token}
    )
    assert status == 200  # the link "works": there is nothing left to send
    stored = await service.app[keys.PREFERENCES].collection.find_one({"_id": gone})
    assert stored is None

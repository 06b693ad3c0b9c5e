"""The store goes away between the mail server's acceptance and the record of it."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from notification_svc.adapters import deliveries
from notification_svc.adapters.deliveries import DeliveryStore, delivery_indexes
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.smtp import SmtpMailer
from notification_svc.adapters.templates import EmailRenderer
from notification_svc.domain.deliveries import DeliveryInProgress
from notification_svc.domain.emails import OutgoingEmail, otp_email
from notification_svc.handlers import EmailChannel, send_email
from notification_svc.metrics import NotificationMetrics
from switchyard.bus import decode_event
from switchyard.directory import UserDirectory
from switchyard.envelope import CATALOG, utcnow
from switchyard.metrics import Metrics
from switchyard.mongo import ensure_indexes
from switchyard.testing import TcpProxy, eventually

from ..support import event, otp, user_id

pytestmark = pytest.mark.integration


class StoreGoesAwayAfterAcceptance:
    """The real SMTP mailer; the store's connection is cut once the server said 250."""

    def __init__(self, mailer: SmtpMailer, proxy: TcpProxy) -> None:
        self.mailer = mailer
        self.proxy = proxy
        self.cut_once = True

    async def send(self, email: OutgoingEmail) -> str:
        reply = await self.mailer.send(email)
        if self.cut_once:
            self.cut_once = False
            await self.proxy.cut()
        return reply


@pytest.fixture
async def proxied_db(mongo_url: str, mongo_db: Any) -> AsyncIterator[tuple[Any, TcpProxy]]:
    """The test's database reached through a cuttable proxy."""
    target = urlsplit(mongo_url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 27017).start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{proxy.port}/",
        tz_aware=True,
        serverSelectionTimeoutMS=1000,
        directConnection=True,
    )
    await ensure_indexes(mongo_db, delivery_indexes())
    yield client[mongo_db.name], proxy
    await client.close()
    await proxy.close()


@pytest.mark.parametrize("lease_seconds", [60, 0], ids=["within-the-lease", "after-the-lease"])
async def test_a_send_the_store_could_not_record_is_recorded_on_redelivery_not_sent_again(
    proxied_db, mongo_db, smtp_sink, lease_seconds
) -> None:
    """The event is retried (the handler raised); its retry must not mail the code again,
    whether it comes while this process's claim still holds or after its lease ran out
    (the default tiers, 1 s, 10 s and 60 s, reach past the 60 s lease)."""
    db, proxy = proxied_db
    mailer = SmtpMailer(
        host="127.0.0.1", port=smtp_sink.port, security="none", mail_from="S <n@s.test>"
    )
    channel = EmailChannel(
        deliveries=DeliveryStore(db[deliveries.COLLECTION]),
        directory=UserDirectory(mongo_db["users"]),
        preferences=PreferenceStore(mongo_db["preferences"]),
        mailer=StoreGoesAwayAfterAcceptance(mailer, proxy),
        renderer=EmailRenderer(product_name="Switchyard"),
        metrics=NotificationMetrics(Metrics("notification")),
        owner=uuid.uuid4().hex,
        claim_lease=dt.timedelta(seconds=lease_seconds),
    )
    decoded = decode_event(event(otp(user_id())).to_json(), catalog=CATALOG)
    request = otp_email(decoded.data, sent_at=utcnow())
    try:
        with pytest.raises(PyMongoError):  # accepted, but the record could not be updated
            await send_email(request, event=decoded, channel=channel)
        assert len(smtp_sink.messages) == 1

        await proxy.restore()
        redelivered = await send_email(request, event=decoded, channel=channel)
        assert redelivered.status == "sent"
        assert len(smtp_sink.messages) == 1  # one code in the inbox, not two
        stored = await DeliveryStore(mongo_db[deliveries.COLLECTION]).get(redelivered.id)
        assert stored is not None and stored.status == "sent" and stored.attempts == 1
        assert stored.provider_response is not None and stored.provider_response.startswith("250")
        assert stored.sent_at is not None
    finally:
        await mailer.close()


async def test_a_send_slower_than_the_claim_lease_keeps_its_claim(mongo_db, smtp_sink) -> None:
    """The mail server holds the message past the claim lease (1 s). The sender renews its
    claim meanwhile, so a copy of the event handled by another replica (a redelivery)
    finds the delivery in progress instead of taking it over and mailing the code twice.
    (The server answers when the test says so: a fixed 2.5 s delay raced the 1.6 s wait
    below on a loaded machine.)"""
    await ensure_indexes(mongo_db, delivery_indexes())
    accept = threading.Event()
    smtp_sink.handler.accept_gate = accept
    mailer = SmtpMailer(
        host="127.0.0.1", port=smtp_sink.port, security="none", mail_from="S <n@s.test>"
    )

    def replica() -> EmailChannel:
        return EmailChannel(
            deliveries=DeliveryStore(mongo_db[deliveries.COLLECTION]),
            directory=UserDirectory(mongo_db["users"]),
            preferences=PreferenceStore(mongo_db["preferences"]),
            mailer=mailer,
            renderer=EmailRenderer(product_name="Switchyard"),
            metrics=NotificationMetrics(Metrics("notification")),
            owner=uuid.uuid4().hex,
            claim_lease=dt.timedelta(seconds=1),
        )

    decoded = decode_event(event(otp(user_id())).to_json(), catalog=CATALOG)
    request = otp_email(decoded.data, sent_at=utcnow())
    try:
        sending = asyncio.create_task(send_email(request, event=decoded, channel=replica()))

        async def held() -> bool:  # the server has the message and holds its answer
            return len(smtp_sink.messages) == 1

        await eventually(held, timeout=20)
        await asyncio.sleep(1.6)  # past the first claim's lease
        with pytest.raises(DeliveryInProgress):
            await send_email(request, event=decoded, channel=replica())
        accept.set()
        sent = await sending
        assert sent.status == "sent"
        assert len(smtp_sink.messages) == 1
    finally:
        accept.set()
        await mailer.close()

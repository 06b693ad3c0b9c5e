"""Auth events in, emails out: on the real broker, the embedded store and a real SMTP server."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from notification_svc import keys
from notification_svc.domain.emails import otp_email
from notification_svc.handlers import send_email
from switchyard import keys as shared_keys
from switchyard.dlq import DeadLetters
from switchyard.envelope import utcnow
from switchyard.testing import SmtpSink, eventually
from switchyard.testing.servers import free_port

from ..support import (
    event,
    login_code,
    otp,
    otp_blocked,
    parked,
    password_changed,
    plain,
    session_reuse,
    user_id,
    verified,
)

pytestmark = pytest.mark.integration


async def test_signup_code_email_arrives_with_both_parts_and_is_recorded(
    start_service, smtp_sink, caplog
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    uid = user_id()
    envelope = event(otp(uid, code="602214", display_name="Ada <b>L</b>"))
    await service.publish(envelope)

    mail = await smtp_sink.wait_for(lambda m: f"{uid}@example.com" in m.recipients)
    assert mail.subject == "Your Switchyard verification code"
    assert "\n    602214\n" in plain(mail)
    assert ">602214</span>" in mail.html and "Ada &lt;b&gt;L&lt;/b&gt;" in mail.html
    assert mail.message["From"] == "Switchyard <no-reply@switchyard.test>"
    assert mail.message["Message-ID"].endswith("@switchyard.test>")
    assert mail.message["Date"] is not None

    delivery = await service.wait_delivery(envelope.id)
    assert delivery.status == "sent" and delivery.attempts == 1
    assert (delivery.channel, delivery.template, delivery.category) == (
        "email",
        "signup_code",
        "signup",
    )
    assert delivery.recipient == f"{uid}@example.com" and delivery.user_id == uid
    assert delivery.provider_response is not None and delivery.provider_response.startswith("250")
    assert delivery.sent_at is not None
    assert mail.message["Message-ID"] == f"<{delivery.id}@switchyard.test>"
    assert service.delivery_count("signup_code", "sent") == 1

    async with aiohttp.ClientSession() as http, http.get(service.url + "/metrics") as response:
        exposition = await response.text()
    assert (
        'notification_deliveries_total{channel="email",outcome="sent",service="notification",'
        'template="signup_code"} 1.0'
    ) in exposition
    assert (
        'notification_send_duration_seconds_count{channel="email",service="notification"} 1.0'
        in exposition
    )
    assert "602214" not in exposition
    logged = [str(vars(record)) for record in caplog.records]
    assert any("email sent" in line for line in logged)
    assert not any("602214" in line for line in logged)  # the code is never logged


async def test_reset_code_welcome_and_security_notices(start_service, smtp_sink) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    uid = user_id()
    for envelope in (
        event(otp(uid, purpose="reset_password", code="118034")),
        event(verified(uid)),
        event(password_changed(uid, reason="reset")),
        event(session_reuse(uid)),
    ):
        await service.publish(envelope)
    subjects = {
        "Your Switchyard password reset code",
        "Welcome to Switchyard",
        "Your Switchyard password was reset",
        "Security alert: we signed out a session of your Switchyard account",
    }
    for subject in subjects:
        await smtp_sink.wait_for(lambda m, s=subject: m.subject == s)
    reset = next(
        m for m in smtp_sink.messages if m.subject == "Your Switchyard password reset code"
    )
    assert "118034" in reset.text and "118034" in reset.html
    assert len(smtp_sink.messages) == 4


async def test_sign_in_codes_and_blocked_code_notices(start_service, smtp_sink) -> None:
    """The owner's way in while password sign-in is locked, and the notice that someone
    guessed codes for their account (auth, issue 11)."""
    service = await start_service(smtp_port=smtp_sink.port)
    uid = user_id()
    sign_in = event(login_code(uid, code="KPQ7-M2XD-4TNA-Z9HB"))
    blocked = event(otp_blocked(uid, purpose="reset_password"))
    await service.publish(sign_in)
    await service.publish(blocked)
    code_mail = await smtp_sink.wait_for(lambda m: m.subject == "Your Switchyard sign-in code")
    assert "KPQ7-M2XD-4TNA-Z9HB" in code_mail.text and "KPQ7-M2XD-4TNA-Z9HB" in code_mail.html
    notice = await smtp_sink.wait_for(
        lambda m: (
            m.subject == "Security alert: wrong codes were entered for your Switchyard account"
        )
    )
    assert "password reset" in plain(notice) and "47 minutes" in plain(notice)
    for envelope, template in ((sign_in, "sign_in_code"), (blocked, "codes_blocked")):
        delivery = await service.wait_delivery(envelope.id)
        assert (delivery.template, delivery.category, delivery.status) == (
            template,
            "security",
            "sent",
        )


async def test_a_redelivered_event_sends_one_email(start_service, smtp_sink) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    envelope = event(otp(user_id()))
    await service.publish(envelope)
    await service.publish(envelope)  # the same event id, published twice

    async def both_settled() -> bool:
        return (
            service.consumed_count("emails", "ok") + service.consumed_count("emails", "duplicate")
            == 2
        )

    await eventually(both_settled)
    await asyncio.sleep(0.3)  # room for a wrongly sent second copy to arrive
    assert len(smtp_sink.messages) == 1
    assert (await service.wait_delivery(envelope.id)).attempts == 1


async def test_racing_consumers_of_one_event_send_once(start_service, smtp_sink) -> None:
    """Handlers run one event at once (bypassing the inbox): the guarded claim lets one send."""
    service = await start_service(smtp_port=smtp_sink.port)
    channel = service.app[keys.EMAIL_CHANNEL]
    envelope = event(otp(user_id()))
    from switchyard.bus import decode_event
    from switchyard.envelope import CATALOG

    decoded = decode_event(envelope.to_json(), catalog=CATALOG)
    request = otp_email(decoded.data, sent_at=utcnow())
    outcomes = await asyncio.gather(
        *(send_email(request, event=decoded, channel=channel) for _ in range(5)),
        return_exceptions=True,
    )
    sent = [o for o in outcomes if not isinstance(o, BaseException) and o.status == "sent"]
    busy = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(sent) >= 1 and all(type(b).__name__ == "DeliveryInProgress" for b in busy)
    await asyncio.sleep(0.2)
    assert len(smtp_sink.messages) == 1
    # The losers' retries find the record final and send nothing more.
    again = await send_email(request, event=decoded, channel=channel)
    assert again.status == "sent" and again.attempts == 1
    assert len(smtp_sink.messages) == 1


async def test_smtp_down_retries_on_the_bus_schedule_then_sends_once(start_service) -> None:
    port = free_port()  # nothing listens here yet
    service = await start_service(smtp_port=port, bus_retry_delays=[0.5, 1.0, 2.0, 4.0])
    envelope = event(otp(user_id()))
    await service.publish(envelope)

    first = await service.wait_delivery(
        envelope.id, lambda d: d.attempts >= 1 and d.status == "pending"
    )
    assert first.provider_response is not None and "cannot connect" in first.provider_response
    with SmtpSink(port=port) as sink:
        mail = await sink.wait_for(lambda m: True, timeout=15)
        delivery = await service.wait_delivery(envelope.id)
        await asyncio.sleep(0.3)
        assert len(sink.messages) == 1
    assert "493817" in mail.text
    assert delivery.status == "sent" and delivery.attempts >= 2
    assert service.consumed_count("emails", "retry") >= 1
    assert service.delivery_count("signup_code", "deferred") >= 1
    assert service.delivery_count("signup_code", "sent") == 1


async def test_smtp_never_back_parks_the_event_in_the_dlq_with_the_reason(
    start_service, settings_overrides
) -> None:
    service = await start_service(smtp_port=free_port(), bus_retry_delays=[0.2, 0.2])
    envelope = event(otp(user_id()))
    await service.publish(envelope)
    [message] = await parked(settings_overrides["amqp_url"], service.queue("emails"))
    assert message.reason == "retries-exhausted"
    assert message.exception_type == "DeliveryDeferred"
    assert "cannot connect" in (message.exception_message or "")
    assert message.attempts == 3
    assert "493817" not in str(message.headers)  # the code never appears in reasons
    delivery = await service.delivery_of(envelope.id)
    assert delivery is not None and delivery.status == "pending" and delivery.attempts == 3


async def test_a_permanent_refusal_is_recorded_as_failed_without_retrying(
    start_service, smtp_sink, settings_overrides
) -> None:
    smtp_sink.handler.reject_with = "550 5.1.1 Mailbox does not exist"
    service = await start_service(smtp_port=smtp_sink.port)
    envelope = event(otp(user_id()))
    await service.publish(envelope)

    delivery = await service.wait_delivery(envelope.id)
    assert delivery.status == "failed" and delivery.attempts == 1
    assert delivery.provider_response == "550 5.1.1 Mailbox does not exist"
    await eventually(lambda: _true(service.consumed_count("emails", "ok") == 1))
    assert service.consumed_count("emails", "retry") == 0
    assert await DeadLetters(settings_overrides["amqp_url"], service.queue("emails")).peek() == []
    assert service.delivery_count("signup_code", "failed") == 1
    assert smtp_sink.messages == []


async def test_a_temporary_refusal_is_retried_and_then_sent(start_service, smtp_sink) -> None:
    smtp_sink.handler.reject_with = "451 4.3.0 Try again later"
    service = await start_service(smtp_port=smtp_sink.port)
    envelope = event(otp(user_id()))
    await service.publish(envelope)
    await service.wait_delivery(envelope.id, lambda d: d.attempts >= 1 and d.status == "pending")
    smtp_sink.handler.reject_with = None
    delivery = await service.wait_delivery(envelope.id)
    assert delivery.status == "sent" and delivery.attempts >= 2
    assert len(smtp_sink.messages) == 1


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"this is not json", "body is not JSON"),
        (None, "data fails the auth.otp.requested schema"),
    ],
)
async def test_malformed_events_go_to_the_dlq_with_the_reason(
    start_service, smtp_sink, settings_overrides, body, why
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    if body is None:  # a well-formed envelope whose code is not six digits
        good = event(otp(user_id()))
        body = good.model_copy(update={"data": {**good.data, "code": "12ab"}}).to_json()
    import aio_pika

    channel = await service.publisher.connection.channel()
    exchange = await channel.get_exchange(settings_overrides["bus_exchange"])
    await exchange.publish(
        aio_pika.Message(body=body, message_id="bad-1"), routing_key="auth.otp.requested"
    )
    await channel.close()

    [message] = await parked(settings_overrides["amqp_url"], service.queue("emails"))
    assert message.reason == "poison"
    assert why in (message.exception_message or "")
    assert message.original_routing_key == "auth.otp.requested"
    # The consumer keeps going: the next good event is sent.
    envelope = event(otp(user_id()))
    await service.publish(envelope)
    assert (await service.wait_delivery(envelope.id)).status == "sent"
    assert len(smtp_sink.messages) == 1


async def _true(value: bool) -> bool:
    return value


async def test_an_address_the_server_cannot_take_is_failed_at_once_not_retried(
    start_service, settings_overrides
) -> None:
    """A non-ASCII local part is valid for auth's contract; this server has no SMTPUTF8."""
    with SmtpSink(enable_SMTPUTF8=False) as sink:
        service = await start_service(smtp_port=sink.port)
        envelope = event(otp(user_id(), email="josé@example.com"))
        await service.publish(envelope)
        delivery = await service.wait_delivery(envelope.id)
        assert sink.messages == []
    assert delivery.status == "failed" and delivery.attempts == 1
    assert "SMTPUTF8" in (delivery.provider_response or "")
    await eventually(lambda: _true(service.consumed_count("emails", "ok") == 1))
    assert service.consumed_count("emails", "retry") == 0
    assert await DeadLetters(settings_overrides["amqp_url"], service.queue("emails")).peek() == []


async def test_the_delivery_record_alone_deduplicates_emails(start_service, smtp_sink) -> None:
    """No second de-duplication through the bus inbox (two store writes per email):
    a redelivered event reaches the handler, which finds the record and sends nothing."""
    service = await start_service(smtp_port=smtp_sink.port)
    envelope = event(otp(user_id()))
    await service.publish(envelope)
    await service.wait_delivery(envelope.id)
    await service.publish(envelope)

    await eventually(lambda: _true(service.consumed_count("emails", "ok") == 2))
    assert service.delivery_count("signup_code", "duplicate") == 1
    assert len(smtp_sink.messages) == 1
    inbox = service.app[shared_keys.MONGO_DB]["inbox"]
    prefix = service.queue("emails") + "|"
    assert await inbox.count_documents({"_id": {"$regex": "^" + re.escape(prefix)}}) == 0

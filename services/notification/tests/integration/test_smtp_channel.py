"""The SMTP adapter against real aiosmtpd servers: STARTTLS and TLS with a self-signed
certificate, authentication, one connection reused for bursts and re-opened when it drops."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from notification_svc.adapters.smtp import SmtpMailer
from notification_svc.domain.deliveries import DeliveryDeferred, DeliveryRejected
from notification_svc.domain.emails import OutgoingEmail, RenderedEmail
from switchyard.testing import SmtpSink
from switchyard.testing.servers import free_port

from ..support import self_signed_certificate

pytestmark = pytest.mark.integration

USER, PASSWORD = "mailer", "correct horse battery staple"


def email(n: int = 0, recipient: str = "ada@example.com") -> OutgoingEmail:
    return OutgoingEmail(
        recipient=recipient,
        display_name="Ada",
        content=RenderedEmail(subject=f"Hello {n}", text=f"text {n}\n", html=f"<p>html {n}</p>"),
        reference=f"dlv_test{n}",
    )


def mailer(port: int, **kwargs) -> SmtpMailer:  # type: ignore[no-untyped-def]
    return SmtpMailer(
        host="127.0.0.1",
        port=port,
        mail_from="Switchyard <no-reply@switchyard.test>",
        security=kwargs.pop("security", "none"),
        timeout=5,
        **kwargs,
    )


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


def starttls_sink(server_context: ssl.SSLContext) -> SmtpSink:
    """A server that insists on STARTTLS and then on authentication."""
    return SmtpSink(
        tls_context=server_context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )


async def test_starttls_with_a_self_signed_certificate_and_authentication(certificate) -> None:
    cert, server_context = certificate
    with starttls_sink(server_context) as sink:
        client = mailer(
            sink.port, security="starttls", ca_file=cert, username=USER, password=PASSWORD
        )
        try:
            reply = await client.send(email())
        finally:
            await client.close()
        assert reply.startswith("250")
        assert [m.subject for m in sink.messages] == ["Hello 0"]
        assert sink.messages[0].message["Message-ID"] == "<dlv_test0@switchyard.test>"


async def test_starttls_refuses_a_certificate_it_was_not_told_to_trust(certificate) -> None:
    _, server_context = certificate
    with SmtpSink(tls_context=server_context, require_starttls=True) as sink:
        client = mailer(sink.port, security="starttls")  # no CA file: the system store only
        with pytest.raises(DeliveryDeferred, match="cannot connect"):
            await client.send(email())
        await client.close()
        assert sink.messages == []


async def test_a_server_without_starttls_is_not_silently_used_in_the_clear() -> None:
    with SmtpSink() as sink:
        client = mailer(sink.port, security="starttls")
        with pytest.raises(DeliveryDeferred):
            await client.send(email())
        await client.close()
        assert sink.messages == []


async def test_implicit_tls(certificate) -> None:
    cert, server_context = certificate
    with SmtpSink(ssl_context=server_context) as sink:
        client = mailer(sink.port, security="tls", ca_file=cert)
        try:
            await client.send(email())
        finally:
            await client.close()
        assert len(sink.messages) == 1


async def test_wrong_credentials_are_a_temporary_failure_not_a_lost_message(certificate) -> None:
    cert, server_context = certificate
    with starttls_sink(server_context) as sink:
        client = mailer(
            sink.port, security="starttls", ca_file=cert, username=USER, password="wrong"
        )
        with pytest.raises(DeliveryDeferred, match="535"):
            await client.send(email())
        await client.close()


async def test_a_burst_shares_one_connection() -> None:
    with SmtpSink() as sink:
        client = mailer(sink.port)
        try:
            await asyncio.gather(*(client.send(email(n)) for n in range(20)))
        finally:
            await client.close()
        assert len(sink.messages) == 20
        assert client.connections_opened == 1


async def test_a_pool_opens_more_connections_only_for_a_burst() -> None:
    with SmtpSink() as sink:
        client = mailer(sink.port, connections=3)
        try:
            for n in range(5):  # one at a time: the same connection every time
                await client.send(email(n))
            assert client.connections_opened == 1
            await asyncio.gather(*(client.send(email(n)) for n in range(5, 35)))
            assert 1 < client.connections_opened <= 3
        finally:
            await client.close()
        assert len(sink.messages) == 35
        assert len({m.message["Message-ID"] for m in sink.messages}) == 35


async def test_a_dropped_connection_is_reopened() -> None:
    port = free_port()
    client = mailer(port, idle_check_seconds=0)  # check liveness before every reuse
    try:
        with SmtpSink(port=port) as first:
            await client.send(email(1))
            assert len(first.messages) == 1
        with SmtpSink(port=port) as second:  # the server restarted: the old connection is dead
            await client.send(email(2))
            assert [m.subject for m in second.messages] == ["Hello 2"]
        assert client.connections_opened == 2
    finally:
        await client.close()


async def test_a_connection_that_dies_mid_send_is_deferred_and_replaced() -> None:
    port = free_port()
    client = mailer(port, idle_check_seconds=3600)  # no liveness check: the send itself finds out
    try:
        with SmtpSink(port=port):
            await client.send(email(1))
        with SmtpSink(port=port) as second:
            with pytest.raises(DeliveryDeferred, match="connection lost"):
                await client.send(email(2))
            await client.send(email(2))  # the retry opens a new connection
            assert len(second.messages) == 1
    finally:
        await client.close()


async def test_refusals_are_sorted_into_permanent_and_temporary() -> None:
    with SmtpSink() as sink:
        client = mailer(sink.port)
        try:
            sink.handler.reject_with = "550 5.1.1 No such mailbox"
            with pytest.raises(DeliveryRejected) as rejected:
                await client.send(email())
            assert rejected.value.response == "550 5.1.1 No such mailbox"
            sink.handler.reject_with = "452 4.2.2 Mailbox full"
            with pytest.raises(DeliveryDeferred):
                await client.send(email())
            sink.handler.reject_with = None
            await client.send(email())  # the same connection still works after refusals
            assert client.connections_opened == 1 and len(sink.messages) == 1
        finally:
            await client.close()


async def test_nothing_listening_is_a_temporary_failure() -> None:
    client = mailer(free_port())
    with pytest.raises(DeliveryDeferred, match="cannot connect"):
        await client.send(email())
    await client.close()


async def test_internationalised_addresses_go_out_with_smtputf8_or_are_refused_for_good() -> None:
    with SmtpSink(enable_SMTPUTF8=True) as sink:  # aiosmtpd's Controller default
        client = mailer(sink.port)
        try:
            await client.send(email(1, recipient="josé@example.com"))
            await client.send(email(2, recipient="user@bücher.de"))
        finally:
            await client.close()
        assert [m.recipients for m in sink.messages] == [
            ["josé@example.com"],
            ["user@xn--bcher-kva.de"],
        ]
    with SmtpSink(enable_SMTPUTF8=False) as plain_sink:  # an IDN domain still goes, as IDNA
        client = mailer(plain_sink.port)
        try:
            await client.send(email(3, recipient="user@bücher.de"))
            with pytest.raises(DeliveryRejected, match="SMTPUTF8"):
                await client.send(email(4, recipient="josé@example.com"))
        finally:
            await client.close()
        assert [m.recipients for m in plain_sink.messages] == [["user@xn--bcher-kva.de"]]

"""Email over SMTP (aiosmtplib): connections reused for bursts, re-opened when they drop.

Failures are sorted by what a retry can change:

- the server refused *this message* (a 5xx reply to RCPT or DATA, or an address
  it cannot take) → :class:`DeliveryRejected`, final;
- anything else — 4xx replies, refused or dropped connections, timeouts, and
  trouble before the transaction (TLS, authentication, our sender refused),
  which is about our configuration rather than the message → :class:`DeliveryDeferred`,
  retried on the bus schedule and parked in the DLQ if it never clears.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from notification_svc.domain.deliveries import DeliveryDeferred, DeliveryRejected
from notification_svc.domain.emails import OutgoingEmail
from notification_svc.settings import NotificationSettings, SmtpSecurity

log = logging.getLogger("notification.smtp")

# Failures of the connection itself: the connection is dropped and re-opened next time.
_CONNECTION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)


# RFC 5322 "specials": address syntax. Python's email package drops the quotes around a display
# name that also holds non-ASCII text when it folds the header, so a name such as
# 'Zoë <x@evil.test>' or 'Zoë, x@evil.test' would reach the reader as another address.
_ADDRESS_SYNTAX = frozenset('()<>[]:;@\\,."')
# Auth's own limit. Folding a long non-ASCII header costs ~0.1 ms a character on the event loop.
_DISPLAY_NAME_CHARS = 100


def _display_name(value: str) -> str:
    """Display names are user input: in the To header, control characters and address syntax
    become spaces, so a name can neither add a header nor pose as (or add) an address, and
    only its first 100 characters are used."""
    return " ".join(
        "".join(
            ch if ch.isprintable() and ch not in _ADDRESS_SYNTAX else " "
            for ch in value[:_DISPLAY_NAME_CHARS]
        ).split()
    )


def _mailbox(address: str) -> str:
    """The address as servers take it: an internationalised domain in its ASCII (IDNA) form.
    A non-ASCII local part stays; sending it needs a server with SMTPUTF8."""
    if address.isascii():
        return address
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return address
    return f"{valid.local_part}@{valid.ascii_domain}"


def compose_message(
    email: OutgoingEmail, *, mail_from: str, now: datetime | None = None
) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred) with Message-ID and Date."""
    _, from_address = parseaddr(mail_from)
    domain = from_address.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["From"] = mail_from
    name, mailbox = _display_name(email.display_name), _mailbox(email.recipient)
    # Not formataddr: it refuses a non-ASCII local part. The name is only atoms and spaces.
    message["To"] = f"{name} <{mailbox}>" if name else mailbox
    message["Subject"] = email.content.subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = f"<{email.reference}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.content.text)
    message.add_alternative(email.content.html, subtype="html")
    return message


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system trust store, plus ``ca_file`` when given (e.g. a self-signed test server)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _response_text(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"[:500]


@dataclass
class _Line:
    """One SMTP connection slot: opened on first use, kept for the next message."""

    smtp: aiosmtplib.SMTP | None = None
    last_used: float = 0.0


class SmtpMailer:
    """Sends over up to ``connections`` reused SMTP connections (a transaction is sequential,
    so each connection carries one message at a time). The most recently used connection is
    taken first, so a trickle of mail keeps a single connection open; bursts open more."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: SmtpSecurity,
        mail_from: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 15.0,
        idle_check_seconds: float = 10.0,
        connections: int = 1,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.mail_from = mail_from
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self.timeout = timeout
        self.idle_check_seconds = idle_check_seconds
        self._lines = [_Line() for _ in range(connections)]
        self._free: asyncio.LifoQueue[_Line] = asyncio.LifoQueue()
        for line in reversed(self._lines):
            self._free.put_nowait(line)
        self.connections_opened = 0

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> SmtpMailer:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            mail_from=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            ca_file=settings.smtp_ca_path,
            timeout=settings.smtp_timeout,
            idle_check_seconds=settings.smtp_idle_check_seconds,
            connections=settings.smtp_connections,
        )

    async def send(self, email: OutgoingEmail) -> str:
        """Send ``email``; returns the server's acceptance reply."""
        message = compose_message(email, mail_from=self.mail_from)
        line = await self._free.get()
        try:
            return await self._send_on(line, message)
        finally:
            self._free.put_nowait(line)

    async def _send_on(self, line: _Line, message: EmailMessage) -> str:
        smtp = await self._connection(line)
        try:
            errors, reply = await smtp.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as error:
            refused = error.recipients[0]
            raise self._classify(refused.code, refused.message) from None
        except aiosmtplib.SMTPSenderRefused as error:
            raise DeliveryDeferred(
                "sender refused: " + _response_text(error.code, error.message)
            ) from None
        except aiosmtplib.SMTPResponseException as error:
            if error.code == 421:  # the server is closing the connection
                await self._drop(line)
            raise self._classify(error.code, error.message) from None
        except aiosmtplib.SMTPNotSupported as error:
            # e.g. an internationalised address on a server without SMTPUTF8: it never will be.
            raise DeliveryRejected(f"not supported by the server: {error.message}") from None
        except _CONNECTION_ERRORS as error:
            await self._drop(line)
            raise DeliveryDeferred(f"connection lost: {type(error).__name__}") from None
        except asyncio.CancelledError:
            # Stopped mid-transaction: the connection's state is unknown, so never reuse it.
            self._abort(line)
            raise
        line.last_used = time.monotonic()
        if errors:  # one recipient per message: a partial refusal cannot happen, but be exact
            first = next(iter(errors.values()))
            raise self._classify(first.code, first.message)
        return f"250 {reply.strip()}"

    @staticmethod
    def _classify(code: int, message: str) -> DeliveryRejected | DeliveryDeferred:
        response = _response_text(code, message)
        return DeliveryRejected(response) if 500 <= code < 600 else DeliveryDeferred(response)

    async def _connection(self, line: _Line) -> aiosmtplib.SMTP:
        smtp = line.smtp
        if smtp is not None and smtp.is_connected:
            if time.monotonic() - line.last_used < self.idle_check_seconds:
                return smtp
            try:  # idle for a while: servers drop idle clients, so check before reusing
                await smtp.noop()
                return smtp
            except (aiosmtplib.SMTPException, OSError):
                log.info("idle SMTP connection was gone; reconnecting")
        await self._drop(line)
        line.smtp = await self._open()
        line.last_used = time.monotonic()
        return line.smtp

    async def _open(self) -> aiosmtplib.SMTP:
        context = tls_context(self.ca_file) if self.security != "none" else None
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            tls_context=context,
            timeout=self.timeout,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as error:
            smtp.close()
            raise DeliveryDeferred(
                "could not open an SMTP session: " + _response_text(error.code, error.message)
            ) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as error:
            smtp.close()
            raise DeliveryDeferred(
                f"cannot connect to {self.host}:{self.port}: {type(error).__name__}"
            ) from None
        self.connections_opened += 1
        log.info(
            "SMTP connection opened",
            extra={"smtp_host": self.host, "smtp_port": self.port, "security": self.security},
        )
        return smtp

    @staticmethod
    async def _drop(line: _Line) -> None:
        smtp, line.smtp = line.smtp, None
        if smtp is None:
            return
        if smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()
        else:
            smtp.close()

    @staticmethod
    def _abort(line: _Line) -> None:
        smtp, line.smtp = line.smtp, None
        if smtp is not None:
            smtp.close()

    async def close(self) -> None:
        """Say QUIT on every open connection (called once the consumers have stopped)."""
        for line in self._lines:
            await self._drop(line)

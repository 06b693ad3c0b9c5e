"""An aiosmtpd SMTP server that keeps every message it accepts, for tests and `make run`."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def part(self, content_type: str) -> str:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                return str(part.get_content())
        raise LookupError(f"no {content_type} part")

    @property
    def text(self) -> str:
        return self.part("text/plain")

    @property
    def html(self) -> str:
        return self.part("text/html")


@dataclass
class _Handler:
    messages: list[ReceivedMail] = field(default_factory=list)
    # Test hooks: a reply code to answer with instead of accepting (e.g. "550 no such user").
    reject_with: str | None = None
    # A slow mail server: seconds to wait (after recording the message) before the 250.
    accept_delay: float = 0.0
    # A mail server that answers only once the test says so (set from any thread): a
    # deterministic "slow" server, where a fixed delay races a loaded machine.
    accept_gate: threading.Event | None = None
    on_message: Callable[[ReceivedMail], None] | None = None
    arrived: asyncio.Condition | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reject_with:
            return self.reject_with
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        received = ReceivedMail(
            sender=str(envelope.mail_from),
            recipients=list(envelope.rcpt_tos),
            message=message,
        )
        self.messages.append(received)
        if self.on_message is not None:
            self.on_message(received)
        if self.accept_delay:
            await asyncio.sleep(self.accept_delay)
        if self.accept_gate is not None:
            await asyncio.to_thread(self.accept_gate.wait)
        return "250 Message accepted for delivery"


class SmtpSink:
    """``with SmtpSink() as sink: … sink.messages`` — a real SMTP server on 127.0.0.1."""

    def __init__(self, port: int = 0, **controller_kwargs: Any) -> None:
        from switchyard.testing.servers import free_port

        self.handler = _Handler()
        self.port = port or free_port()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **controller_kwargs
        )

    @property
    def messages(self) -> list[ReceivedMail]:
        return self.handler.messages

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def wait_for(
        self, predicate: Callable[[ReceivedMail], bool], timeout: float = 10.0
    ) -> ReceivedMail:
        """Wait until a message matching ``predicate`` arrives."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"no matching mail within {timeout}s ({len(self.messages)} received)"
                )
            await asyncio.sleep(0.05)

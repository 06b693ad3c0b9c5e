"""Helpers for the notification service's tests: auth events, a running service, TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel

from notification_svc import keys
from notification_svc.adapters.deliveries import DeliveryStore
from notification_svc.domain.deliveries import Delivery
from switchyard import keys as shared_keys
from switchyard.bus import Bus
from switchyard.dlq import DeadLetters
from switchyard.envelope import Envelope, new_envelope, utcnow
from switchyard.events.auth import (
    LoginCodeRequested,
    OtpBlocked,
    OtpRequested,
    PasswordChanged,
    SessionReuseDetected,
    UserDeleted,
    UserRegistered,
    UserUpdated,
    UserVerified,
)
from switchyard.events.chat import MessageSent
from switchyard.testing import AppServer, eventually, service_bus


def user_id() -> str:
    return "usr_" + uuid.uuid4().hex[:16]


def event(data: BaseModel, *, event_id: str | None = None) -> Envelope:
    return new_envelope(data, service="auth", event_id=event_id)


def otp(
    uid: str,
    *,
    purpose: str = "verify_email",
    code: str = "493817",
    email: str | None = None,
    display_name: str = "Ada Lovelace",
) -> OtpRequested:
    return OtpRequested(
        user_id=uid,
        email=email or f"{uid}@example.com",
        display_name=display_name,
        purpose=purpose,  # type: ignore[arg-type]
        code=code,
        expires_at=utcnow() + dt.timedelta(minutes=10),
    )


def registered(
    uid: str, *, email: str | None = None, display_name: str = "Ada", at: dt.datetime | None = None
) -> UserRegistered:
    return UserRegistered(
        user_id=uid,
        email=email or f"{uid}@example.com",
        display_name=display_name,
        roles=["customer"],
        registered_at=at or utcnow(),
    )


def verified(uid: str, *, display_name: str = "Ada", at: dt.datetime | None = None) -> UserVerified:
    return UserVerified(
        user_id=uid,
        email=f"{uid}@example.com",
        display_name=display_name,
        verified_at=at or utcnow(),
    )


def updated(uid: str, *, email: str, display_name: str, at: dt.datetime) -> UserUpdated:
    return UserUpdated(
        user_id=uid, email=email, display_name=display_name, roles=["customer"], updated_at=at
    )


def password_changed(uid: str, reason: str = "change") -> PasswordChanged:
    return PasswordChanged(
        user_id=uid,
        email=f"{uid}@example.com",
        display_name="Ada",
        reason=reason,  # type: ignore[arg-type]
        changed_at=utcnow(),
    )


def session_reuse(uid: str) -> SessionReuseDetected:
    return SessionReuseDetected(
        user_id=uid,
        email=f"{uid}@example.com",
        display_name="Ada",
        family_id="fam_1",
        detected_at=utcnow(),
    )


def login_code(uid: str, *, code: str = "KPQ7-M2XD-4TNA-Z9HB") -> LoginCodeRequested:
    return LoginCodeRequested(
        user_id=uid,
        email=f"{uid}@example.com",
        display_name="Ada",
        code=code,
        expires_at=utcnow() + dt.timedelta(minutes=10),
    )


def otp_blocked(uid: str, *, purpose: str = "reset_password") -> OtpBlocked:
    return OtpBlocked(
        user_id=uid,
        email=f"{uid}@example.com",
        display_name="Ada",
        purpose=purpose,  # type: ignore[arg-type]
        failed_attempts=10,
        blocked_until=utcnow() + dt.timedelta(minutes=47),
    )


def deleted(uid: str) -> UserDeleted:
    return UserDeleted(user_id=uid, deleted_at=utcnow())


def plain(mail: Any) -> str:
    """The text part as the reader sees it (SMTP carries CRLF line endings)."""
    return str(mail.text).replace("\r\n", "\n")


async def parked(amqp_url: str, queue: str, timeout: float = 15.0) -> list[Any]:
    """Wait until ``queue``'s DLQ holds messages; return them (left in place)."""
    found: list[Any] = []

    async def any_parked() -> bool:
        found[:] = await DeadLetters(amqp_url, queue).peek()
        return bool(found)

    await eventually(any_parked, timeout)
    return found


@dataclass
class RunningService:
    """The notification app on a real port, plus a publisher playing the auth service."""

    app: web.Application
    server: AppServer
    publisher: Bus
    consumed: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def deliveries(self) -> DeliveryStore:
        return self.app[keys.DELIVERIES]

    async def publish(self, envelope: Envelope) -> None:
        await self.publisher.publish(envelope)

    async def delivery_of(self, event_id: str) -> Delivery | None:
        doc = await self.deliveries.collection.find_one({"event_id": event_id})
        return await self.deliveries.get(doc["_id"]) if doc else None

    async def deliveries_of(self, event_id: str) -> list[Delivery]:
        found = self.deliveries.collection.find({"event_id": event_id})
        return [d for doc in await found.to_list() if (d := await self.deliveries.get(doc["_id"]))]

    async def wait_delivery(
        self,
        event_id: str,
        predicate: Callable[[Delivery], bool] = lambda d: d.final,
        timeout: float = 10.0,
    ) -> Delivery:
        found: list[Delivery] = []

        async def check() -> bool:
            for delivery in await self.deliveries_of(event_id):
                if predicate(delivery):
                    found.append(delivery)
                    return True
            return False

        await eventually(check, timeout)
        return found[0]

    def queue(self, handler: str) -> str:
        return str(self.app[shared_keys.BUS].queue_name(handler))

    def consumed_count(self, handler: str, outcome: str) -> float:
        return self.app[shared_keys.METRICS].value(
            "events_consumed_total", queue=self.queue(handler), outcome=outcome
        )

    def delivery_count(self, template: str, outcome: str) -> float:
        return self.app[keys.NOTIFICATION_METRICS].value(
            "notification_deliveries_total", channel="email", template=template, outcome=outcome
        )


def publisher_bus(overrides: dict[str, Any]) -> Bus:
    """The bus auth would publish on, for events the notification service consumes."""
    return service_bus(overrides, "auth")


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files (the test's own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def chat_bus(overrides: dict[str, Any]) -> Bus:
    return service_bus(overrides, "chat")


def message_sent(
    conversation_id: str,
    seq: int,
    sender: str,
    recipients: list[str],
    *,
    offline: list[str] | None = None,
    preview: str = "Are we still on for Thursday?",
) -> MessageSent:
    return MessageSent(
        message_id=f"m_{uuid.uuid4().hex}",
        conversation_id=conversation_id,
        seq=seq,
        sender_id=sender,
        recipient_ids=recipients,
        offline_recipient_ids=recipients if offline is None else offline,
        preview=preview,
        attachment_ids=[],
        sent_at=utcnow(),
    )

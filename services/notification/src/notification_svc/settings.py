"""Typed settings of the notification service (DESIGN §6)."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from switchyard.settings import ServiceSettings, credential, port_setting

SmtpSecurity = Literal["none", "starttls", "tls"]


class NotificationSettings(ServiceSettings):
    service_name: str = "notification"
    port: int = port_setting("notification")

    # Email channel. The default points at the local mail sink `make run` starts
    # (and Mailpit's SMTP port under docker compose).
    smtp_host: str = Field("127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(1025, ge=1, le=65535, validation_alias="SMTP_PORT")
    smtp_username: str | None = Field(None, validation_alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = credential("SMTP_PASSWORD")
    smtp_security: SmtpSecurity = Field("none", validation_alias="SMTP_SECURITY")
    # Extra CA bundle (PEM) to trust for STARTTLS/TLS, e.g. a self-signed test server.
    smtp_ca_file: FilePath | None = Field(None, validation_alias="SMTP_CA_FILE")
    smtp_timeout: float = Field(15.0, gt=0, validation_alias="SMTP_TIMEOUT")
    # A connection idle this long is checked with NOOP before it is reused.
    smtp_idle_check_seconds: float = Field(10.0, ge=0, validation_alias="SMTP_IDLE_CHECK_SECONDS")
    # Connections used in parallel, each reused. One is plenty on a LAN or loopback; a remote
    # provider costs ~4 round trips per message, so raise it there (and stay within its limits).
    smtp_connections: int = Field(1, ge=1, le=32, validation_alias="SMTP_CONNECTIONS")
    mail_from: str = Field(
        "Switchyard <no-reply@switchyard.localhost>", validation_alias="MAIL_FROM"
    )
    product_name: str = Field("Switchyard", validation_alias="MAIL_PRODUCT_NAME")

    # Push (FCM through firebase-admin). Unset credentials: push deliveries are recorded
    # ``suppressed`` (reason push-not-configured) and everything else works.
    fcm_credentials_file: FilePath | None = Field(None, validation_alias="FCM_CREDENTIALS_FILE")
    fcm_endpoint: str = Field(
        "https://fcm.googleapis.com", pattern=r"^https?://", validation_alias="FCM_ENDPOINT"
    )
    fcm_timeout: float = Field(10.0, gt=0, validation_alias="FCM_TIMEOUT")
    # One chat push per conversation per user in this window; later messages fold into a digest.
    chat_push_window_seconds: float = Field(30.0, gt=0, validation_alias="CHAT_PUSH_WINDOW_SECONDS")
    digest_poll_seconds: float = Field(1.0, gt=0, validation_alias="DIGEST_POLL_SECONDS")

    # Outgoing webhooks. Private targets (loopback, RFC 1918, link-local, metadata) are refused
    # unless this is on (local development and tests with a receiver on 127.0.0.1).
    webhook_allow_private_targets: bool = Field(
        False, validation_alias="WEBHOOK_ALLOW_PRIVATE_TARGETS"
    )
    webhook_timeout: float = Field(10.0, gt=0, le=60, validation_alias="WEBHOOK_TIMEOUT")
    # The webhook queue's own retry tiers (seconds), stretched to hours.
    webhook_retry_delays: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 60.0, 600.0, 3600.0, 21600.0],
        validation_alias="WEBHOOK_RETRY_DELAYS",
    )
    # A subscription whose endpoint keeps failing this long is disabled.
    webhook_disable_after_seconds: float = Field(
        86400.0, gt=0, validation_alias="WEBHOOK_DISABLE_AFTER_SECONDS"
    )
    webhook_concurrency: int = Field(64, ge=1, le=1000, validation_alias="WEBHOOK_CONCURRENCY")
    # Users per batch of a role broadcast (each batch one bus message, pushes in FCM batches).
    broadcast_batch_size: int = Field(500, ge=1, le=5000, validation_alias="BROADCAST_BATCH_SIZE")
    # Base URL the gateway is reached at (links in emails: List-Unsubscribe).
    public_base_url: str = Field(
        "http://localhost:8080", pattern=r"^https?://", validation_alias="PUBLIC_BASE_URL"
    )
    # Signs one-click unsubscribe links (HMAC); `make run` generates it into .var/. Required
    # outside development; unset in development, a per-process key is used (links then
    # stop working when the process restarts).
    unsubscribe_secret: SecretStr | None = Field(None, validation_alias="UNSUBSCRIBE_SECRET")

    @field_validator("webhook_retry_delays", mode="before")
    @classmethod
    def _delays_from_text(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_an_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address:
            raise ValueError(
                "MAIL_FROM must be an address, e.g. 'Switchyard <no-reply@example.com>'"
            )
        return value

    @model_validator(mode="after")
    def _unsubscribe_secret_outside_development(self) -> NotificationSettings:
        if self.environment == "production" and self.unsubscribe_secret is None:
            raise ValueError("UNSUBSCRIBE_SECRET must be set outside development")
        return self

    @model_validator(mode="after")
    def _credentials_together(self) -> NotificationSettings:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD are set together or not at all")
        return self

    @property
    def smtp_ca_path(self) -> Path | None:
        return Path(self.smtp_ca_file) if self.smtp_ca_file else None

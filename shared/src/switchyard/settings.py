"""Typed settings shared by every service.

Each service subclasses :class:`ServiceSettings`, adds its own fields and calls
:func:`load_settings` once in its entry point. Settings are passed into
``create_app`` explicitly; nothing reads ``os.environ`` ad hoc.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchyard.ports import SERVICE_PORTS, port_variable

Environment = Literal["development", "test", "production"]


def port_setting(service: str) -> Any:
    """A service's ``port`` field: ``<SERVICE>_PORT``, by default its port in SERVICE_PORTS."""
    return Field(SERVICE_PORTS[service], ge=1, le=65535, validation_alias=port_variable(service))


# Values that only ever belong on a developer's machine. Outside development a
# secret that matches one of these (or is shorter than 32 characters) stops the
# process at start-up.
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "dev", "development", "password", ""}


class ServiceSettings(BaseSettings):
    """Settings every service shares (DESIGN §6)."""

    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    service_name: str = "switchyard"
    environment: Environment = Field("development", validation_alias="SWITCHYARD_ENV")
    host: str = Field("127.0.0.1", validation_alias="HOST")
    port: int = Field(SERVICE_PORTS["gateway"], ge=1, le=65535)  # each service: port_setting

    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", validation_alias="AMQP_URL")
    mongo_url: str = Field("mongodb://127.0.0.1:27017/", validation_alias="MONGO_URL")
    mongo_database: str | None = Field(None, validation_alias="MONGO_DATABASE")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )
    log_format: Literal["json", "console"] = Field("json", validation_alias="LOG_FORMAT")

    # Bus: the exchange name and queue prefix exist so test runs never collide.
    bus_exchange: str = Field("switchyard.events", validation_alias="BUS_EXCHANGE")
    bus_queue_prefix: str = Field("", validation_alias="BUS_QUEUE_PREFIX")
    bus_retry_delays: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [1.0, 10.0, 60.0, 300.0], validation_alias="BUS_RETRY_DELAYS"
    )
    bus_prefetch: int = Field(32, ge=1, le=1000, validation_alias="BUS_PREFETCH")
    # Deliveries of one message without an ack (crashes, requeues) before the broker parks it
    # in the queue's DLQ. Explicit, because RabbitMQ 4.x otherwise applies 20 and drops.
    bus_delivery_limit: int = Field(20, ge=1, le=1000, validation_alias="BUS_DELIVERY_LIMIT")
    # A handler still running after this many seconds is cancelled (a failure: retry tier).
    bus_handler_timeout: float = Field(60.0, gt=0, validation_alias="BUS_HANDLER_TIMEOUT")
    # Only for throwaway namespaces (tests): queues unused this long are deleted by the broker.
    bus_queue_expires_ms: int | None = Field(None, ge=1000, validation_alias="BUS_QUEUE_EXPIRES_MS")
    # Quorum in production. "classic" only for throwaway namespaces that expire (the tests):
    # RabbitMQ 3.10 stalls the broker while expiring quorum queues are deleted.
    bus_queue_type: Literal["quorum", "classic"] = Field(
        "quorum", validation_alias="BUS_QUEUE_TYPE"
    )

    outbox_poll_interval: float = Field(0.5, gt=0, validation_alias="OUTBOX_POLL_INTERVAL")
    outbox_linger: float = Field(0.01, ge=0, le=1, validation_alias="OUTBOX_LINGER")
    # An event no queue is bound for (yet) is re-tried, with pauses growing up to the
    # retry maximum, for this long; then it is parked in <service>.unroutable.dlq.
    outbox_unroutable_window: float = Field(
        3600.0, gt=0, validation_alias="OUTBOX_UNROUTABLE_WINDOW"
    )
    outbox_unroutable_retry_max: float = Field(
        30.0, gt=0, validation_alias="OUTBOX_UNROUTABLE_RETRY_MAX"
    )

    # Access tokens: every service verifies them itself against auth's JWKS (DESIGN §5).
    # The issuer is the public base URL clients reach the suite under (the gateway).
    auth_issuer: str = Field(
        f"http://localhost:{SERVICE_PORTS['gateway']}", min_length=1, validation_alias="AUTH_ISSUER"
    )
    jwt_audience: str = Field("switchyard", min_length=1, validation_alias="JWT_AUDIENCE")
    jwks_url: str = Field(
        f"http://127.0.0.1:{SERVICE_PORTS['auth']}/.well-known/jwks.json",
        validation_alias="JWKS_URL",
    )
    # Revoked sessions (switchyard.revocation): auth's list of them (default: beside the JWKS,
    # same origin) and how many a process keeps at most.
    revoked_sessions_url: str | None = Field(None, validation_alias="REVOKED_SESSIONS_URL")
    revocation_deny_list_capacity: int = Field(
        200_000, ge=1, validation_alias="REVOCATION_DENY_LIST_CAPACITY"
    )
    # The bearer token services present to each other's /internal/ endpoints (auth's revoked
    # sessions). Never routed by the gateway; required outside development where used.
    internal_api_token: SecretStr | None = Field(None, validation_alias="INTERNAL_API_TOKEN")

    # Keys the HMAC of stored Idempotency-Key fingerprints (switchyard.idempotency), so a
    # stored fingerprint of a body with a password in it is no offline guessing oracle.
    # Required outside development by services that accept the header.
    idempotency_secret: SecretStr | None = Field(None, validation_alias="IDEMPOTENCY_SECRET")
    accepts_idempotency_keys: ClassVar[bool] = False

    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="MAX_BODY_BYTES")
    shutdown_timeout: float = Field(10.0, ge=0, validation_alias="SHUTDOWN_TIMEOUT")

    @field_validator("bus_retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("bus_retry_delays")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("retry delays must be a non-empty list of positive seconds")
        return value

    @property
    def database_name(self) -> str:
        return self.mongo_database or self.service_name

    @model_validator(mode="after")
    def _classic_queues_only_where_they_expire(self) -> ServiceSettings:
        if self.bus_queue_type == "classic" and self.bus_queue_expires_ms is None:
            raise ValueError(
                "BUS_QUEUE_TYPE=classic is for throwaway namespaces whose queues expire "
                "(BUS_QUEUE_EXPIRES_MS set): durable queues are quorum queues"
            )
        return self

    @model_validator(mode="after")
    def _reject_placeholder_secrets(self) -> ServiceSettings:
        if self.environment == "development" or self.environment == "test":
            return self
        if self.accepts_idempotency_keys and self.idempotency_secret is None:
            raise ValueError("IDEMPOTENCY_SECRET must be set outside development")
        for name, value in self:
            if not isinstance(value, SecretStr):
                continue
            raw = value.get_secret_value()
            extra = type(self).model_fields[name].json_schema_extra
            issued_elsewhere = isinstance(extra, dict) and extra.get("credential") is True
            if raw.lower() in _PLACEHOLDER_SECRETS:
                raise ValueError(f"{name} must be set to a real secret outside development")
            if not issued_elsewhere and len(raw) < 32:
                raise ValueError(
                    f"{name} must be a real secret of 32+ characters outside development"
                )
        return self


def credential(alias: str) -> Any:
    """A secret issued by someone else (an SMTP password, a provider's API key): outside
    development it must not be a placeholder, but its length is not ours to choose.
    Secrets we generate (signing, encryption, HMAC keys) stay plain ``SecretStr`` fields
    and must be 32+ characters."""
    return Field(None, validation_alias=alias, json_schema_extra={"credential": True})


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def describe_validation_error(error: ValidationError) -> str:
    """Render a settings validation error as lines a human can act on."""
    lines = [f"Invalid settings ({error.error_count()} problem(s)):"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        lines.append(f"  - {where.upper()}: {item['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment; on failure print why and exit with status 2."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        raise SystemExit(2) from None

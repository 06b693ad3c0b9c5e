"""Typed settings of the gateway (DESIGN §6); the route table itself lives in a YAML file."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from switchyard.settings import ServiceSettings, port_setting

DEFAULT_ROUTES_FILE = Path(__file__).with_name("routes.yaml")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    port: int = port_setting("gateway")

    # The admin listener: /metrics and /gateway/routes (and /healthz, /readyz), never the
    # public port. Loopback by default; 0 = any free port (tests).
    admin_host: str = Field("127.0.0.1", validation_alias="GATEWAY_ADMIN_HOST")
    admin_port: int = Field(9080, ge=0, le=65535, validation_alias="GATEWAY_ADMIN_PORT")

    routes_file: Path = Field(DEFAULT_ROUTES_FILE, validation_alias="GATEWAY_ROUTES_FILE")
    # Worker processes sharing the port through SO_REUSEPORT (one event loop each).
    workers: int = Field(1, ge=1, le=64, validation_alias="GATEWAY_WORKERS")

    # Upstream overrides per service: comma-separated base URLs (several = round-robin).
    auth_upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="GATEWAY_AUTH_UPSTREAMS"
    )
    chat_upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="GATEWAY_CHAT_UPSTREAMS"
    )
    payments_upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="GATEWAY_PAYMENTS_UPSTREAMS"
    )
    notification_upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="GATEWAY_NOTIFICATION_UPSTREAMS"
    )
    file_upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="GATEWAY_FILE_UPSTREAMS"
    )

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="CORS_ORIGINS"
    )
    # Peers whose X-Forwarded-For / X-Forwarded-Proto we believe (CIDRs, comma-separated).
    trusted_proxies: Annotated[list[IpNetwork], NoDecode] = Field(
        default_factory=list, validation_alias="GATEWAY_TRUSTED_PROXIES"
    )

    rate_limit_redis_url: str | None = Field(None, validation_alias="RATE_LIMIT_REDIS_URL")
    rate_limit_key_prefix: str = Field(
        "switchyard:ratelimit:", validation_alias="RATE_LIMIT_KEY_PREFIX"
    )
    # Slots of the host-local limiter table shared by the workers (16 bytes each).
    rate_limit_local_slots: int = Field(1 << 16, ge=64, validation_alias="RATE_LIMIT_LOCAL_SLOTS")

    # jwks_url, auth_issuer and jwt_audience come from ServiceSettings.
    token_cache_size: int = Field(10_000, ge=0, validation_alias="GATEWAY_TOKEN_CACHE_SIZE")

    # "stderr", "off", or a file path: one JSON line per request.
    access_log: str = Field("stderr", validation_alias="GATEWAY_ACCESS_LOG")
    max_header_bytes: int = Field(16 * 1024, ge=1024, validation_alias="GATEWAY_MAX_HEADER_BYTES")
    # Headers in one request head: aiohttp upstreams refuse ~127, the gateway adds ~9.
    max_headers: int = Field(100, ge=16, validation_alias="GATEWAY_MAX_HEADERS")
    header_timeout: float = Field(10.0, gt=0, validation_alias="GATEWAY_HEADER_TIMEOUT")
    # A request body must arrive completely within this many seconds, however it trickles.
    body_timeout: float = Field(120.0, gt=0, validation_alias="GATEWAY_BODY_TIMEOUT")
    keepalive_timeout: float = Field(75.0, gt=0, validation_alias="GATEWAY_KEEPALIVE_TIMEOUT")
    upstream_idle_timeout: float = Field(
        20.0, gt=0, validation_alias="GATEWAY_UPSTREAM_IDLE_TIMEOUT"
    )
    upstream_max_idle: int = Field(256, ge=0, validation_alias="GATEWAY_UPSTREAM_MAX_IDLE")

    _split = field_validator(
        "auth_upstreams",
        "chat_upstreams",
        "payments_upstreams",
        "notification_upstreams",
        "file_upstreams",
        "cors_origins",
        "trusted_proxies",
        mode="before",
    )(_split_commas)

    @property
    def upstream_overrides(self) -> dict[str, list[str]]:
        """Upstream groups of the route file replaced from the environment."""
        overrides = {
            "auth": self.auth_upstreams,
            "chat": self.chat_upstreams,
            "payments": self.payments_upstreams,
            "notification": self.notification_upstreams,
            "file": self.file_upstreams,
        }
        return {name: urls for name, urls in overrides.items() if urls}

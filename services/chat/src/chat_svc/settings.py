"""Typed settings of the chat service (DESIGN §6)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from switchyard.settings import ServiceSettings, port_setting


class ChatSettings(ServiceSettings):
    service_name: str = "chat"
    port: int = port_setting("chat")

    # Socket.IO (Engine.IO) liveness: the server pings every interval and drops a client
    # that does not answer within the timeout (the stock clients' defaults: 25 s / 20 s).
    socketio_ping_interval: float = Field(25.0, gt=0, validation_alias="SOCKETIO_PING_INTERVAL")
    socketio_ping_timeout: float = Field(20.0, gt=0, validation_alias="SOCKETIO_PING_TIMEOUT")
    # An Engine.IO session that has not completed its Socket.IO connect (with a token) this
    # long after its handshake is closed (the JS server's connectTimeout, 45 s).
    socketio_connect_timeout: float = Field(45.0, gt=0, validation_alias="SOCKETIO_CONNECT_TIMEOUT")
    # Browser origins allowed to open a socket; unset: the same origin only.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="CORS_ORIGINS"
    )
    # The fan-out exchange replicas share (its own, never the events exchange).
    socketio_exchange: str = Field("switchyard.socketio", validation_alias="SOCKETIO_EXCHANGE")

    # Per-socket flood limit: a token bucket of `rate` events/s holding `burst`; a socket
    # refused `flood_disconnect_after` times in a row is disconnected.
    socket_event_rate: float = Field(20.0, gt=0, validation_alias="CHAT_SOCKET_EVENT_RATE")
    socket_event_burst: int = Field(40, ge=1, validation_alias="CHAT_SOCKET_EVENT_BURST")
    flood_disconnect_after: int = Field(40, ge=1, validation_alias="CHAT_FLOOD_DISCONNECT_AFTER")
    # Sockets one user may hold open on one replica (tabs, devices); one more is refused at
    # connect ("too-many-sockets"), so one token cannot multiply the flood limit or the
    # connection state without bound.
    max_sockets_per_user: int = Field(20, ge=1, validation_alias="CHAT_MAX_SOCKETS_PER_USER")

    # Typing: at most one "typing" forwarded per user and conversation per throttle; a
    # typing state not refreshed within the expiry ends on its own.
    typing_throttle: float = Field(2.0, ge=0, validation_alias="CHAT_TYPING_THROTTLE")
    typing_expiry: float = Field(5.0, gt=0, validation_alias="CHAT_TYPING_EXPIRY")

    # Delivery acks of one recipient in one conversation within this window are recorded
    # (and announced) once, with the highest seq.
    delivery_ack_window: float = Field(
        0.05, ge=0, le=5, validation_alias="CHAT_DELIVERY_ACK_WINDOW"
    )

    # Presence: each replica refreshes its connections every heartbeat; a connection not
    # refreshed within the TTL (its replica died) is swept and its user may go offline.
    presence_heartbeat: float = Field(5.0, gt=0, validation_alias="CHAT_PRESENCE_HEARTBEAT")
    presence_ttl: float = Field(15.0, gt=0, validation_alias="CHAT_PRESENCE_TTL")

    # A reserved seq whose message never landed (its sender crashed) is filled with a void
    # (deleted) message after this long, so readers never wait on it forever.
    seq_hole_after: float = Field(5.0, gt=0, validation_alias="CHAT_SEQ_HOLE_AFTER")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _presence_outlives_heartbeats(self) -> ChatSettings:
        if self.presence_ttl <= self.presence_heartbeat:
            raise ValueError("CHAT_PRESENCE_TTL must be longer than CHAT_PRESENCE_HEARTBEAT")
        return self

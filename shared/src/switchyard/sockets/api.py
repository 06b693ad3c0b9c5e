"""The shape of a Socket.IO API description (see ``switchyard.sockets.chat``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class SocketEvent:
    name: str
    direction: Literal["client", "server"]  # who emits it
    payload: type[BaseModel]
    ack: type[BaseModel] | None  # client events: the success ack (failures: ErrorAck)
    summary: str


@dataclass(frozen=True)
class SocketApi:
    service: str
    path: str
    description: str
    events: tuple[SocketEvent, ...]
    error_ack: type[BaseModel]

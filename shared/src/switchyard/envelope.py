"""The event envelope (CloudEvents 1.0 attributes) and the catalog of event types.

Every event's ``data`` is a pydantic model registered under a hand-written type
name (``<service>.<entity>.<past-tense-verb>``) and a version. The version is
carried in ``dataschema``; consumers refuse versions they do not know.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchyard.logging import request_id_var
from switchyard.tracing import current_traceparent

SCHEMA_BASE = "https://switchyard.dev/contracts/events/"
# <service>.<entity>.<past-tense-verb>; a service that is its own entity may drop it
# (DESIGN §3.1 names `file.uploaded`, `file.deleted`).
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,2}$"
_DATASCHEMA = re.compile(re.escape(SCHEMA_BASE) + r"(?P<type>[a-z0-9_.]+)/v(?P<version>\d+)\.json$")

# AMQP headers carrying the CloudEvents attributes (binding: cloudEvents_<name>).
HEADER_PREFIX = "cloudEvents_"
HEADER_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "traceparent",
    "correlationid",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode, with ``data`` still untyped."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=256)
    type: str = Field(pattern=EVENT_TYPE_PATTERN)
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    data: dict[str, Any]
    traceparent: str | None = None
    correlationid: str | None = None

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a UTC offset (RFC 3339)")
        return value

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    def headers(self) -> dict[str, str]:
        """The CloudEvents attributes as AMQP headers (``cloudEvents_<name>``)."""
        out: dict[str, str] = {}
        for name in HEADER_ATTRIBUTES:
            value = getattr(self, name)
            if value is None:
                continue
            out[HEADER_PREFIX + name] = (
                format_time(value) if isinstance(value, datetime) else str(value)
            )
        return out

    @property
    def version(self) -> int:
        match = _DATASCHEMA.match(self.dataschema)
        if match is None or match["type"] != self.type:
            raise UnknownEventVersion(self.type, self.dataschema)
        return int(match["version"])


DataT = TypeVar("DataT", bound=BaseModel)
ModelT = TypeVar("ModelT", bound=type[BaseModel])


class UnknownEventType(LookupError):
    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


class UnknownEventVersion(LookupError):
    def __init__(self, event_type: str, dataschema: str) -> None:
        super().__init__(f"unknown version of {event_type!r}: dataschema {dataschema!r}")


@dataclass(frozen=True)
class EventSpec:
    """One event type at one version: its name, data model and description."""

    type: str
    version: int
    model: builtins.type[BaseModel]
    description: str

    @property
    def dataschema(self) -> str:
        return f"{SCHEMA_BASE}{self.type}/v{self.version}.json"

    @property
    def producer(self) -> str:
        return self.type.split(".", 1)[0]


class EventCatalog:
    """The registry of event data models by (type, version)."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, int], EventSpec] = {}
        self._by_model: dict[type[BaseModel], EventSpec] = {}

    def register(self, event_type: str, version: int = 1) -> Callable[[ModelT], ModelT]:
        if not re.match(EVENT_TYPE_PATTERN, event_type):
            raise ValueError(
                f"event type {event_type!r} is not <service>.<entity>.<verb> (or <service>.<verb>)"
            )

        def decorate(model: ModelT) -> ModelT:
            key = (event_type, version)
            existing = self._specs.get(key)
            if existing is not None and existing.model is not model:
                raise ValueError(f"{event_type} v{version} is already registered")
            doc = (model.__doc__ or "").strip().splitlines()
            spec = EventSpec(event_type, version, model, doc[0] if doc else event_type)
            self._specs[key] = spec
            self._by_model[model] = spec
            return model

        return decorate

    def spec_for_model(self, model: type[BaseModel]) -> EventSpec:
        try:
            return self._by_model[model]
        except KeyError:
            raise UnknownEventType(model.__name__) from None

    def types_of(self, models: Iterable[type[BaseModel]]) -> tuple[str, ...]:
        """The event types of ``models`` (e.g. the keys of a handler table), in their order:
        what a subscription binds to. Raises :class:`UnknownEventType` for a model the
        catalog does not know."""
        return tuple(dict.fromkeys(self.spec_for_model(model).type for model in models))

    def spec(self, event_type: str, version: int) -> EventSpec:
        spec = self._specs.get((event_type, version))
        if spec is None:
            if any(t == event_type for t, _ in self._specs):
                raise UnknownEventVersion(event_type, f"v{version}")
            raise UnknownEventType(event_type)
        return spec

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: (s.type, s.version)))

    def __contains__(self, event_type: object) -> bool:
        return any(t == event_type for t, _ in self._specs)

    def decode(self, envelope: Envelope) -> BaseModel:
        """Validate ``envelope.data`` against its registered model."""
        spec = self.spec(envelope.type, envelope.version)
        return spec.model.model_validate(envelope.data)


CATALOG = EventCatalog()


def event_type(name: str, version: int = 1) -> Callable[[ModelT], ModelT]:
    """Register a data model in the shared catalog: ``@event_type("auth.user.registered")``."""
    return CATALOG.register(name, version)


def examples(*data: dict[str, Any]) -> ConfigDict:
    """``model_config = examples({...})`` on an event model: JSON examples of its ``data``,
    exported into its JSON Schema and the AsyncAPI message, and validated by the contract
    test (every event model carries at least one)."""
    return ConfigDict(json_schema_extra={"examples": [dict(item) for item in data]})


def new_envelope(
    data: BaseModel,
    *,
    service: str,
    subject: str | None = None,
    correlation_id: str | None = None,
    catalog: EventCatalog = CATALOG,
    event_id: str | None = None,
) -> Envelope:
    """Wrap ``data`` in an envelope; type and version come from its catalog entry."""
    spec = catalog.spec_for_model(type(data))
    return Envelope(
        id=event_id or str(uuid.uuid4()),
        source=f"/switchyard/{service}",
        type=spec.type,
        time=utcnow(),
        subject=subject,
        dataschema=spec.dataschema,
        data=data.model_dump(mode="json"),
        traceparent=current_traceparent(),
        correlationid=correlation_id or request_id_var.get(),
    )


@dataclass(frozen=True)
class Event(Generic[DataT]):
    """What a handler receives: the envelope, its typed data, and delivery facts."""

    envelope: Envelope
    data: DataT
    attempt: int = 1
    redelivered: bool = False

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def subject(self) -> str | None:
        return self.envelope.subject


def parse_envelope(body: bytes) -> Envelope:
    """Parse a message body; raises ValueError subclasses the consumer treats as poison."""
    return Envelope.model_validate_json(body)


def envelope_from_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    return {
        key[len(HEADER_PREFIX) :]: str(value)
        for key, value in headers.items()
        if key.startswith(HEADER_PREFIX)
    }


__all__ = [
    "CATALOG",
    "Envelope",
    "Event",
    "EventCatalog",
    "EventSpec",
    "UnknownEventType",
    "UnknownEventVersion",
    "ValidationError",
    "event_type",
    "examples",
    "new_envelope",
    "parse_envelope",
]

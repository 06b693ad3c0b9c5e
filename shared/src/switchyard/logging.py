"""Structured logging: one JSON object per line (or readable console lines).

Every record carries the service name, the request id of the HTTP request or
event being handled, and the current trace and span ids. Values under keys
that look secret (passwords, tokens, codes) are redacted, and bearer tokens or
JWTs that slip into a message are masked.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "switchyard_request_id", default=None
)

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"^(code|otp|otp_code|verification_code|reset_code|authorization|cookie|set-cookie"
    r"|.*password.*|.*passwd.*|.*secret.*|.*token.*|.*api[_-]?key.*|.*private.*|.*credential.*)$",
    re.IGNORECASE,
)
# Bearer tokens, JWTs (three base64url parts starting with eyJ), whsec_ secrets.
_SECRET_VALUE = re.compile(
    r"(Bearer\s+[A-Za-z0-9._~+/=-]+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|whsec_[A-Za-z0-9+/=]+)"
)
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def redact(value: Any, key: str = "") -> Any:
    """Return ``value`` with secrets masked, recursing into mappings and lists."""
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def _context_fields(service: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"service": service}
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    return fields


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: redact(value, key)
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_context_fields(self.service))
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        context = _context_fields(self.service)
        extras = _extra_fields(record)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {self.service:<12} {redact(record.getMessage())}"
        tail = {k: v for k, v in {**context, **extras}.items() if k != "service"}
        if tail:
            line += "  " + " ".join(f"{k}={v}" for k, v in tail.items())
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger of the process to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else ConsoleFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log duplicates our own request metrics and carries raw paths.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)

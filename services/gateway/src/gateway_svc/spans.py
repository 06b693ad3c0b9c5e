"""The gateway's own server span per request, when traces are exported (issue 12 item 6).

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set, every request the
gateway answers becomes one ``SERVER`` span — route, status, upstream, rate-limit verdict —
exported over OTLP/HTTP (protobuf), the child of a valid incoming ``traceparent`` (else a
new root). Upstream gets the span's own context in ``traceparent``, so a service's spans
hang below the gateway's. Without the variable the proxy's context holds ``None`` and a
request costs one ``is None`` test.

Why not the SDK's span pipeline: ``ReadableSpan`` plus the OTLP encoder cost ~60 µs per
span in Python, more than the whole proxied request (the benchmark measured 0.21× nginx
with it). Here a span is encoded at its end straight into OTLP's protobuf wire format:
everything but its ids and times (name, kind, attributes, status) is the same for every
request of one route, status, upstream and verdict, so it is encoded once and cached. A
thread sends the batches (``OTEL_BSP_SCHEDULE_DELAY`` ms apart, default 1000, or as soon
as ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, default 512, are waiting; at most
``OTEL_BSP_MAX_QUEUE_SIZE``, default 8192, wait — beyond that spans are dropped and
counted), with ``OTEL_EXPORTER_OTLP_HEADERS`` and ``OTEL_EXPORTER_OTLP_TIMEOUT``. An
endpoint or header http.client could not use is refused at start-up (naming the variable);
an unexpected error in the thread is logged and counted, and the thread goes on.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import struct
import threading
import time
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from gateway_svc.proxy.edges import accept_traceparent, trace_bits

if TYPE_CHECKING:
    from gateway_svc.proxy.exchange_state import ExchangeState

log = logging.getLogger("gateway.spans")

SPAN_KIND_SERVER = 2
STATUS_UNSET, STATUS_ERROR = 0, 2
_FIXED64 = struct.Struct("<Q").pack
Scalar = str | bool | int | float


def exporting() -> bool:
    """True when the standard OTLP variables ask for traces to be exported."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


# -- the protobuf wire format, as much of it as OTLP traces need ---------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any_value(value: Scalar) -> bytes:
    if isinstance(value, bool):
        return _varint(2 << 3) + _varint(int(value))
    if isinstance(value, int):
        return _varint(3 << 3) + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return _varint(4 << 3 | 1) + struct.pack("<d", value)
    return _field(1, str(value).encode())


def _key_value(key: str, value: Scalar) -> bytes:
    return _field(1, key.encode()) + _field(2, _any_value(value))


def _attributes(number: int, attributes: dict[str, Scalar]) -> bytes:
    return b"".join(_field(number, _key_value(key, value)) for key, value in attributes.items())


# RFC 9110 token characters: what a header name may hold.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ENDPOINT_VARIABLES = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT"
_HEADER_VARIABLES = "OTEL_EXPORTER_OTLP_TRACES_HEADERS / OTEL_EXPORTER_OTLP_HEADERS"


def _endpoint(url: str) -> urllib.parse.SplitResult:
    """The collector's URL, split; ValueError naming the variables when it is unusable."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises ValueError for a port that is not one)
    except ValueError as error:
        raise ValueError(f"{_ENDPOINT_VARIABLES}: {url!r} has a bad port ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{_ENDPOINT_VARIABLES}: {url!r} is not an http(s) URL with a host")
    return parts


def _headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers``, when each is one http.client can send; else ValueError naming the
    variables (the name, never the value: it is often a credential)."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{_HEADER_VARIABLES}: {name!r} is not a valid header name")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{_HEADER_VARIABLES}: the value of {name!r} is not latin-1") from None
        if any(char in value for char in "\r\n\0"):
            raise ValueError(f"{_HEADER_VARIABLES}: the value of {name!r} has a line break or NUL")
    return headers


class SpanRecorder:
    """Encodes the gateway's server spans and sends them in batches (see the module)."""

    def __init__(self, service: str, url: str, headers: dict[str, str] | None = None) -> None:
        # Refused here, at start-up: in the thread they would only drop every span.
        self.url = _endpoint(url)
        self.headers = {"Content-Type": "application/x-protobuf", **_headers(headers or {})}
        self.timeout = float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "10"))
        self.delay = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "1000")) / 1000
        self.batch_size = int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"))
        self.max_queue = int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "8192"))
        resource = Resource.create({SERVICE_NAME: service})
        scope = _field(1, b"gateway_svc")
        # Everything of a request around its spans: resource, then the scope's spans.
        scalars = {
            key: value
            for key, value in resource.attributes.items()
            if isinstance(value, str | bool | int | float)
        }
        self._resource = _field(1, _attributes(1, scalars))
        self._scope = _field(1, scope)
        self._tails: dict[tuple[object, ...], bytes] = {}
        # Appended by the event loop, taken by the thread (deque: both ends are atomic).
        self.pending: deque[bytes] = deque()
        # Each counter has one writer: spans refused with the queue full (the event loop),
        # spans the thread could not send (see :attr:`dropped` for both).
        self.dropped_full = 0
        self.dropped_unsent = 0
        self.exported = 0
        self.export_failures = 0  # unexpected errors of the thread (logged, then it goes on)
        self._wake = threading.Event()
        self._stopping = False
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="gateway-spans", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """The spans dropped: refused with the queue full plus those that could not be sent."""
        return self.dropped_full + self.dropped_unsent

    @classmethod
    def from_environment(cls, service: str) -> SpanRecorder | None:
        """A recorder for the standard ``OTEL_EXPORTER_OTLP_*`` variables, or None when no
        endpoint is configured."""
        url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not url:
            base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if not base:
                return None
            url = base.rstrip("/") + "/v1/traces"
        raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
            "OTEL_EXPORTER_OTLP_HEADERS", ""
        )
        headers = {}
        for item in raw.split(","):
            name, sep, value = item.partition("=")
            if sep and name.strip():
                headers[urllib.parse.unquote(name.strip())] = urllib.parse.unquote(value.strip())
        return cls(service, url, headers)

    # -- the hot path's end of it ------------------------------------------------------------

    def begin(self, exchange: ExchangeState) -> bytes:
        """The ``traceparent`` to forward: the incoming trace (or a new one) with the
        gateway's span as parent. Sets the exchange's span ids."""
        if exchange.span_id:
            assert exchange.traceparent is not None
            return exchange.traceparent
        incoming = accept_traceparent(exchange.traceparent_in)
        if incoming is exchange.traceparent_in:
            # A valid incoming context: our span is its child.
            exchange.span_parent = int(incoming[36:52], 16)
            span_id = trace_bits(64) | 1
            traceparent = b"%s%016x%s" % (incoming[:36], span_id, incoming[52:])
        else:
            # A new root: its span id is our span's.
            span_id = int(incoming[36:52], 16)
            traceparent = incoming
        exchange.span_id = span_id
        exchange.traceparent = traceparent
        return traceparent

    def record(self, exchange: ExchangeState, status: int, elapsed: float) -> None:
        """The exchange's span, ended now, queued for export (unsampled traces: nothing)."""
        traceparent = self.begin(exchange)
        if not int(traceparent[53:55], 16) & 1:
            return
        pending = self.pending
        if len(pending) >= self.max_queue:
            self.dropped_full += 1
            return
        decision = exchange.decision
        upstream = exchange.upstream
        route = exchange.route
        key = (
            exchange.method,
            exchange.route_name,
            status,
            route.upstream if route is not None else None,
            upstream.url if upstream is not None else None,
            None if decision is None else decision.allowed,
        )
        tail = self._tails.get(key)
        if tail is None:
            tail = self._tails[key] = self._tail(*key)
        end = time.time_ns()
        ids = (
            b"\x0a\x10"  # 1 trace_id, 16 bytes
            + bytes.fromhex(traceparent[3:35].decode())
            + b"\x12\x08"  # 2 span_id, 8 bytes
            + exchange.span_id.to_bytes(8, "big")
        )
        if exchange.span_parent is not None:
            ids += b"\x22\x08" + exchange.span_parent.to_bytes(8, "big")  # 4 parent_span_id
        # 7 start_time_unix_nano, 8 end_time_unix_nano (fixed64), then the cached rest
        span = ids + b"\x39" + _FIXED64(end - int(elapsed * 1e9)) + b"\x41" + _FIXED64(end) + tail
        pending.append(span)
        if len(pending) == self.batch_size:
            self._wake.set()

    def _tail(
        self,
        method: bytes,
        route_name: str,
        status: int,
        upstream_group: str | None,
        host: str | None,
        allowed: bool | None,
    ) -> bytes:
        """A span's fields after its ids and times: name, kind, attributes, status."""
        attributes: dict[str, Scalar] = {
            "http.request.method": method.decode("latin-1"),
            "http.route": route_name,
            "http.response.status_code": status,
            "gateway.rate_limit": (
                "not_checked" if allowed is None else "allowed" if allowed else "limited"
            ),
        }
        if upstream_group is not None:
            attributes["gateway.upstream"] = upstream_group
        if host is not None:
            attributes["server.address"] = host
        name = f"{method.decode('latin-1')} {route_name}".encode()
        code = STATUS_ERROR if status >= 500 else STATUS_UNSET
        return (
            _field(5, name)
            + _varint(6 << 3)
            + _varint(SPAN_KIND_SERVER)
            + _attributes(9, attributes)
            + _field(15, _varint(3 << 3) + _varint(code) if code else b"")
        )

    # -- the exporting thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.delay)
            self._wake.clear()
            self._flush()
        self._flush()

    def _flush(self) -> None:
        pending = self.pending
        while pending:
            take = pending.popleft
            spans = [take() for _ in range(min(len(pending), self.batch_size))]
            try:
                self._send(spans)
            except Exception:  # a bug must not end the thread: every later span would be lost
                self.export_failures += 1
                self.dropped_unsent += len(spans)
                self._disconnect()
                log.exception("exporting spans failed unexpectedly", extra={"spans": len(spans)})

    def _send(self, spans: list[bytes]) -> None:
        scope_spans = self._scope + b"".join(_field(2, span) for span in spans)
        body = _field(1, self._resource + _field(2, scope_spans))
        try:
            connection = self._connection
            if connection is None:
                kind = (
                    http.client.HTTPSConnection
                    if self.url.scheme == "https"
                    else http.client.HTTPConnection
                )
                connection = self._connection = kind(
                    self.url.hostname or "127.0.0.1", self.url.port, timeout=self.timeout
                )
            connection.request("POST", self.url.path or "/v1/traces", body, self.headers)
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise OSError(f"the collector answered {response.status}")
            self.exported += len(spans)
        except (OSError, http.client.HTTPException) as error:
            self._disconnect()
            self.dropped_unsent += len(spans)
            log.warning(
                "could not export spans", extra={"spans": len(spans), "error": repr(error)[:200]}
            )

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Export what is still waiting, then stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(self.timeout + 5)
        if self._connection is not None:
            self._connection.close()

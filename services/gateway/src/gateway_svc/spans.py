"""The gateway's own server span per request, when traces are exported (issue 12 item 6).

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set, every request the
gateway answers becomes one ``SERVER`` span — route, status, upstream, rate-limit verdict —
exported over OTLP/HTTP in batches (the SDK's ``BatchSpanProcessor``, a thread of its own),
the child of a valid incoming ``traceparent`` (else a new root). Upstream gets the span's
own context in ``traceparent``, so a service's spans hang below the gateway's.

Without it the proxy's context holds ``None`` and a request costs one ``is None`` test.

The hot path never enters the SDK's tracer: the span's ids are chosen where the forwarded
``traceparent`` is built (:meth:`SpanRecorder.begin`, a seeded PRNG like the gateway's new
trace ids) and the finished span is handed to the processor as a ``ReadableSpan`` once,
when the exchange ends (:meth:`SpanRecorder.record`).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway_svc.proxy.edges import accept_traceparent, trace_bits

if TYPE_CHECKING:
    from gateway_svc.proxy.exchange_state import ExchangeState

_OK = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


def exporting() -> bool:
    """True when the standard OTLP variables ask for traces to be exported."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class SpanRecorder:
    """Builds the gateway's server spans and hands them to ``processor``."""

    def __init__(self, service: str, processor: SpanProcessor) -> None:
        self.processor = processor
        self.resource = Resource.create({SERVICE_NAME: service})
        self.scope = InstrumentationScope("gateway_svc")

    @classmethod
    def from_environment(cls, service: str) -> SpanRecorder | None:
        """A recorder exporting over OTLP/HTTP (the SDK reads the ``OTEL_*`` variables),
        or None when no endpoint is configured."""
        if not exporting():
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(service, BatchSpanProcessor(OTLPSpanExporter()))

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
        """The exchange's span, ended now, to the processor (unsampled traces: nothing)."""
        traceparent = self.begin(exchange)
        flags = int(traceparent[53:55], 16)
        if not flags & 1:
            return
        trace_id = int(traceparent[3:35], 16)
        end = time.time_ns()
        parent = (
            SpanContext(
                trace_id, exchange.span_parent, is_remote=True, trace_flags=TraceFlags(flags)
            )
            if exchange.span_parent is not None
            else None
        )
        decision = exchange.decision
        upstream = exchange.upstream
        route = exchange.route
        method = exchange.method.decode("latin-1")
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.route": exchange.route_name,
            "http.response.status_code": status,
            "url.path": exchange.path.decode("latin-1"),
            "gateway.rate_limit": (
                "not_checked" if decision is None else "allowed" if decision.allowed else "limited"
            ),
        }
        if route is not None:
            attributes["gateway.upstream"] = route.upstream
        if upstream is not None:
            attributes["server.address"] = upstream.url
        self.processor.on_end(
            ReadableSpan(
                name=f"{method} {exchange.route_name}",
                context=SpanContext(
                    trace_id, exchange.span_id, is_remote=False, trace_flags=TraceFlags(flags)
                ),
                parent=parent,
                resource=self.resource,
                attributes=attributes,
                kind=SpanKind.SERVER,
                instrumentation_scope=self.scope,
                status=_ERROR if status >= 500 else _OK,
                start_time=end - int(elapsed * 1e9),
                end_time=end,
            )
        )

    def close(self) -> None:
        """Export what is still batched, then stop the processor's thread."""
        self.processor.shutdown()

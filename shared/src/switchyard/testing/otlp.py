"""A local OTLP/HTTP trace receiver: what an OpenTelemetry collector would get, decoded.

Point an exporter at it (``OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url``: the SDK posts
protobuf to ``/v1/traces``) and read :attr:`OtlpReceiver.spans`, each a
:class:`ReceivedSpan` with hex ids and plain attribute values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from switchyard.testing.servers import AppServer

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str  # "SERVER", "CLIENT", …
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    start_ns: int = 0
    end_ns: int = 0


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


class OtlpReceiver(AppServer):
    """Accepts ``POST /v1/traces`` (``application/x-protobuf``) like a collector. With
    ``decode=False`` (a benchmark's sink) it only counts requests, bytes and spans."""

    def __init__(self, *, decode: bool = True) -> None:
        self.decode = decode
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.bytes = 0
        self.span_count = 0
        app = web.Application()
        app.router.add_post(TRACES_PATH, self._receive)
        super().__init__(app)

    async def _receive(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        body = await request.read()
        self.requests += 1
        self.bytes += len(body)
        export = ExportTraceServiceRequest.FromString(body)
        self.span_count += sum(
            len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans
        )
        for resource_spans in export.resource_spans if self.decode else ():
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def of(self, service: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.service == service]


__all__ = ["OtlpReceiver", "ReceivedSpan", "TRACES_PATH"]

"""OpenTelemetry tracing with W3C trace-context propagation.

HTTP servers, HTTP clients and aio-pika are traced by the official
``opentelemetry-instrumentation-*`` packages. Spans are exported over OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the SDK reads the standard ``OTEL_*``
variables itself); otherwise they are recorded for propagation only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured: dict[str, TracerProvider] = {}


def configure_tracing(service: str) -> TracerProvider:
    """Install the process-wide tracer provider and instrumentations (idempotent).

    Called once per process before the first application is built: the aiohttp
    server instrumentation wraps ``web.Application`` for apps created afterwards.
    """
    if "provider" in _configured:
        return _configured["provider"]
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    AioPikaInstrumentor().instrument(tracer_provider=provider)
    _configured["provider"] = provider
    return provider


def shutdown_tracing() -> None:
    provider = _configured.get("provider")
    if provider is not None:
        provider.force_flush(timeout_millis=2000)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active span, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def inject(carrier: MutableMapping[str, Any]) -> None:
    propagate.inject(carrier)


def context_from_traceparent(traceparent: str | None) -> context.Context:
    if not traceparent:
        return context.get_current()
    return propagate.extract({"traceparent": traceparent})


def extract(carrier: Mapping[str, Any]) -> context.Context:
    return propagate.extract({k: v for k, v in carrier.items() if isinstance(v, str)})

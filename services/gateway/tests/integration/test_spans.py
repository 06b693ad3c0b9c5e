"""The gateway's own server spans (issue 12 item 6): with OTEL_EXPORTER_OTLP_ENDPOINT set,
one SERVER span per request reaches a real OTLP/HTTP receiver (protobuf), the child of the
incoming traceparent, and upstream gets the span's context; without it, nothing is
recorded and the incoming traceparent is forwarded as it came."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway_svc.spans import SpanRecorder
from switchyard.testing import eventually
from switchyard.testing.otlp import OtlpReceiver, ReceivedSpan

from .conftest import GatewayFactory, Keys, Upstream, dead_url, raw_request, route_table

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OtlpReceiver]:
    """A collector on loopback, named by the standard variables (as in compose and k8s)."""
    async with OtlpReceiver() as server:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export batches every 50 ms
        yield server


async def spans_of(receiver: OtlpReceiver, count: int) -> list[ReceivedSpan]:
    async def arrived() -> bool:
        return len(receiver.of("gateway")) >= count

    await eventually(arrived, timeout=10)
    return receiver.of("gateway")


async def test_one_server_span_per_request_continuing_the_incoming_trace(
    make_gateway: GatewayFactory, upstream: Upstream, keys: Keys, receiver: OtlpReceiver
) -> None:
    table = route_table(upstream.url, dead=[dead_url()])
    table["rate_limits"]["tight"] = {"limit": 1, "window": 60}
    gateway = await make_gateway(table)
    assert gateway.spans is not None

    status, _, _ = await raw_request(gateway.port, "GET", "/public/a", {"traceparent": INCOMING})
    assert status == 200
    forwarded = upstream.hits[-1]["headers"]["traceparent"]
    version, trace_id, span_id, flags = forwarded.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id != PARENT  # upstream's parent is the gateway's span

    (span,) = await spans_of(receiver, 1)
    assert (span.kind, span.trace_id, span.span_id, span.parent_span_id) == (
        "SERVER",
        TRACE_ID,
        span_id,
        PARENT,
    )
    assert span.name == "GET public"
    assert span.attributes == {
        "http.request.method": "GET",
        "http.route": "public",
        "http.response.status_code": 200,
        "gateway.rate_limit": "allowed",
        "gateway.upstream": "main",
        "server.address": upstream.url,
    }
    assert 0 < span.end_ns - span.start_ns < 10**10

    # Answered at the door: still one span each, a new root without a traceparent.
    assert (await raw_request(gateway.port, "GET", "/api/v1/chat/c"))[0] == 401
    assert (await raw_request(gateway.port, "GET", "/tight/a"))[0] == 200
    assert (await raw_request(gateway.port, "GET", "/tight/b"))[0] == 429
    spans = await spans_of(receiver, 4)
    by_route = {s.attributes["http.route"]: s for s in spans[1:]}
    refused = by_route["protected"]
    assert refused.attributes["http.response.status_code"] == 401
    assert refused.attributes["gateway.rate_limit"] == "allowed"  # a 401 spends quota too
    assert "server.address" not in refused.attributes  # never forwarded
    assert refused.parent_span_id == "" and refused.trace_id != TRACE_ID
    limited = [s for s in spans if s.attributes["http.response.status_code"] == 429]
    assert [s.attributes["gateway.rate_limit"] for s in limited] == ["limited"]
    assert all(s.status_code == 0 for s in spans)

    assert (await raw_request(gateway.port, "GET", "/dead/x"))[0] == 502
    spans = await spans_of(receiver, 5)
    assert spans[-1].attributes["gateway.upstream"] == "dead"
    assert spans[-1].status_code == 2  # an error
    assert len(spans) == 5  # one per request, none for anything else


async def test_without_an_endpoint_nothing_is_recorded_and_the_traceparent_passes_as_is(
    make_gateway: GatewayFactory, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    gateway = await make_gateway(route_table(upstream.url))
    assert gateway.spans is None
    assert gateway.context is not None and gateway.context.spans is None
    status, _, _ = await raw_request(gateway.port, "GET", "/public/a", {"traceparent": INCOMING})
    assert status == 200
    assert upstream.hits[-1]["headers"]["traceparent"] == INCOMING


@pytest.mark.parametrize(
    ("variable", "value", "refusal"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:notaport", "bad port"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://127.0.0.1:4318", "not an http\\(s\\) URL"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret%0Aevil", "line break"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1", "not a valid header name"),
    ],
)
def test_a_bad_otlp_endpoint_or_header_is_refused_at_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, refusal: str
) -> None:
    """In the export thread these would drop every span silently: refused at start-up."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=refusal) as refused:
        SpanRecorder.from_environment("gateway")
    assert variable in str(refused.value)
    assert "secret" not in str(refused.value)


async def test_an_unexpected_export_error_is_logged_counted_and_the_thread_goes_on(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    spans = gateway.spans
    assert spans is not None
    spans.headers["X-Broken"] = "a\nb"  # what http.client refuses with a ValueError
    status, _, _ = await raw_request(gateway.port, "GET", "/public/a", {"traceparent": INCOMING})
    assert status == 200

    async def failed() -> bool:
        # The exporter thread counts the failure before it logs it: wait for both.
        logged = (r.getMessage() == "exporting spans failed unexpectedly" for r in caplog.records)
        return spans.export_failures >= 1 and any(logged)

    await eventually(failed, timeout=30)
    assert spans.dropped >= 1 and spans.dropped_unsent >= 1
    del spans.headers["X-Broken"]
    status, _, _ = await raw_request(gateway.port, "GET", "/public/b", {"traceparent": INCOMING})
    assert status == 200
    (span,) = await spans_of(receiver, 1)  # the thread still exports
    assert span.trace_id == TRACE_ID

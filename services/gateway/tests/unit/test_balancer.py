"""Host choice: round-robin over closed circuits, open circuits skipped, and panic routing
when every host of an upstream is out (no event loop needed: no connection is made)."""

from __future__ import annotations

from gateway_svc.domain.breaker import CircuitState
from gateway_svc.domain.routes import BreakerConfig, UpstreamConfig
from gateway_svc.proxy.upstream import UpstreamGroup

URLS = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]


def group(**breaker: object) -> UpstreamGroup:
    config = UpstreamConfig(
        urls=URLS, breaker=BreakerConfig.model_validate({"failures": 1, **breaker})
    )
    return UpstreamGroup("svc", config, max_idle=4)


def test_an_open_host_leaves_the_rotation() -> None:
    upstream = group()
    first, second = upstream.hosts
    first.breaker.failure(0)
    assert [upstream.choose(0.1) for _ in range(4)] == [second] * 4
    assert first.panicked == 0


def test_every_host_open_routes_to_them_anyway() -> None:
    upstream = group()
    for host in upstream.hosts:
        host.breaker.failure(0)
    chosen = [upstream.choose(0.1) for _ in range(4)]
    assert chosen == [upstream.hosts[0], upstream.hosts[1]] * 2  # still round-robin
    assert [host.panicked for host in upstream.hosts] == [2, 2]
    assert all(host.breaker.state is CircuitState.OPEN for host in upstream.hosts)
    # a retry never goes back to a host it tried
    assert upstream.choose(0.1, exclude=upstream.hosts) is None


def test_without_panic_every_host_open_is_a_refusal() -> None:
    upstream = group(panic=False, open_seconds=2)
    for host in upstream.hosts:
        host.breaker.failure(0)
    assert upstream.choose(0.5) is None
    assert upstream.retry_after(0.5) == 1.5


def test_the_readiness_probe_request() -> None:
    upstream = group(probe_path="/readyz")
    assert upstream.hosts[0].probe_request == (
        b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nConnection: close\r\n\r\n"
    )
    assert group(probe_path=None).hosts[0].probe_request is None
    assert not group(probe_path=None).hosts[0].needs_prober()

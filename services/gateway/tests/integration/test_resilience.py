"""Upstream failures: 502 on refused connections, 504 on slow answers, circuit breakers
that open and recover (by a half-open request, or as soon as the host's readiness probe
answers), panic routing when every host is out, and retries only where they are safe."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway_svc.app import Gateway
from gateway_svc.domain.breaker import CircuitState
from switchyard.testing import TcpProxy, eventually

from .conftest import GatewayFactory, Upstream, dead_url, route_table


def with_breaker(table: dict[str, Any], upstream: str, **options: Any) -> dict[str, Any]:
    table["upstreams"][upstream]["breaker"].update(options)
    return table


async def metrics_text(client: aiohttp.ClientSession, gateway: Gateway) -> str:
    async with client.get(gateway.admin_url + "/metrics") as response:
        return await response.text()


async def test_upstream_down_gives_502(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url, down=[dead_url()]))
    async with client.get(gateway.url + "/down/x") as response:
        assert response.status == 502
        assert response.content_type == "application/problem+json"
        assert (await response.json())["type"].endswith("/bad-gateway")


async def test_slow_upstream_gives_504(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    # The route's timeout at 1.5 s here (0.5 s in the table): an answer after 0.1 s stays
    # well under it even when a loaded machine keeps the gateway off the CPU for a while.
    table = route_table(upstream.url)
    [slow] = [route for route in table["routes"] if route["name"] == "slow"]
    slow["timeout"] = 1.5
    gateway = await make_gateway(table)
    async with client.get(gateway.url + "/slow/x?sleep=3") as response:
        assert response.status == 504
        assert (await response.json())["type"].endswith("/gateway-timeout")
    async with client.get(gateway.url + "/slow/y?sleep=0.1") as response:
        assert response.status == 200  # under the route's timeout


async def test_breaker_opens_then_a_probe_closes_it(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    """The passive breaker alone (no readiness probe, no panic): fail fast with 503 while
    open, one half-open request once the open time is over."""
    target = urlsplit(upstream.url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    try:
        table = route_table(upstream.url, flaky=[f"http://127.0.0.1:{proxy.port}"])
        # Open for 3 s (1 s in the table): the "still open" request below comes well inside
        # it even when a loaded machine pauses this test for a second.
        gateway = await make_gateway(
            with_breaker(table, "flaky", probe_path=None, panic=False, open_seconds=3)
        )
        async with client.get(gateway.url + "/flaky/ok") as response:
            assert response.status == 200
        await proxy.cut()
        statuses = []
        for _ in range(3):  # breaker: 3 consecutive failures
            async with client.get(gateway.url + "/flaky/x") as response:
                statuses.append(response.status)
        assert statuses == [502, 502, 502]
        async with client.get(gateway.url + "/flaky/x") as response:
            assert response.status == 503
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["type"].endswith("/upstream-unavailable")
        async with client.get(gateway.admin_url + "/metrics") as response:
            text = await response.text()
        labels = f'host="http://127.0.0.1:{proxy.port}",service="gateway",upstream="flaky"'
        assert f"gateway_circuit_state{{{labels}}} 2.0" in text
        assert f"gateway_upstream_healthy{{{labels}}} 0.0" in text

        await proxy.restore()
        async with client.get(gateway.url + "/flaky/x") as response:
            assert response.status == 503  # still open: no request reaches it early
        # Refused fast while open (asking does not extend it), then one half-open probe.
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            async with client.get(gateway.url + "/flaky/back") as response:
                if response.status == 200:
                    break
                assert response.status == 503
            assert asyncio.get_running_loop().time() < deadline, "the circuit never closed"
            await asyncio.sleep(0.1)
        host = gateway.groups["flaky"].hosts[0]
        assert host.breaker.state.name == "CLOSED"
        async with client.get(gateway.url + "/flaky/again") as response:
            assert response.status == 200
    finally:
        await proxy.close()


async def test_probe_failure_reopens_the_circuit(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    table = route_table(upstream.url, down=[dead_url()])
    gateway = await make_gateway(with_breaker(table, "down", probe_path=None, panic=False))
    for _ in range(3):
        async with client.get(gateway.url + "/down/x"):
            pass
    await asyncio.sleep(1.1)
    async with client.get(gateway.url + "/down/probe") as response:
        assert response.status == 502  # the probe went through, and failed
    async with client.get(gateway.url + "/down/x") as response:
        assert response.status == 503  # so the circuit is open again, for twice as long
        assert 1 <= int(response.headers["Retry-After"]) <= 2  # less whatever time passed
    assert gateway.groups["down"].hosts[0].breaker.open_for == 2


async def test_the_readiness_probe_closes_the_circuit_as_soon_as_the_host_is_back(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    """An open time far longer than the outage does not extend it: the gateway asks the
    host's /readyz every 0.2 s while the circuit is open and closes it on the first 200."""
    target = urlsplit(upstream.url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    try:
        table = route_table(upstream.url, flaky=[f"http://127.0.0.1:{proxy.port}"])
        with_breaker(
            table, "flaky", open_seconds=60, max_open_seconds=60, probe_interval=0.2, panic=False
        )
        gateway = await make_gateway(table)
        host = gateway.groups["flaky"].hosts[0]
        await proxy.cut()
        for _ in range(3):
            async with client.get(gateway.url + "/flaky/x") as response:
                assert response.status == 502
        async with client.get(gateway.url + "/flaky/x") as response:
            assert response.status == 503
            assert int(response.headers["Retry-After"]) >= 59

        async def prober_running() -> bool:
            return host.prober

        await eventually(prober_running, timeout=10)
        assert upstream.count("/readyz") == 0  # the probes cannot reach it yet
        await proxy.restore()

        async def closed() -> bool:
            return host.breaker.state is CircuitState.CLOSED

        await eventually(closed, timeout=10)
        assert upstream.count("/readyz", "GET") >= 1
        async with client.get(gateway.url + "/flaky/back") as response:
            assert response.status == 200

        async def prober_ended() -> bool:
            return not host.prober

        await eventually(prober_ended, timeout=10)
        probes = upstream.count("/readyz")
        await asyncio.sleep(0.5)
        assert upstream.count("/readyz") == probes  # no probing while closed
    finally:
        await proxy.close()


async def test_every_host_out_routes_to_them_anyway(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    """Panic routing (Envoy's panic threshold): with every host of the upstream ejected,
    requests still go to them instead of a certain 503, so a host that came back answers
    at once, before any probe or open time says so."""
    target = urlsplit(upstream.url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    try:
        table = route_table(upstream.url, flaky=[f"http://127.0.0.1:{proxy.port}"])
        with_breaker(table, "flaky", open_seconds=60, max_open_seconds=60, probe_path=None)
        gateway = await make_gateway(table)
        host = gateway.groups["flaky"].hosts[0]
        await proxy.cut()
        statuses = []
        for _ in range(5):
            async with client.get(gateway.url + "/flaky/x") as response:
                statuses.append(response.status)
        assert statuses == [502] * 5  # the host's own answer, never a 503 from the gateway
        assert host.breaker.state is CircuitState.OPEN and host.breaker.opened == 1
        await proxy.restore()
        async with client.get(gateway.url + "/flaky/back") as response:
            assert response.status == 200
        assert host.breaker.state is CircuitState.CLOSED
        text = await metrics_text(client, gateway)
        labels = f'host="http://127.0.0.1:{proxy.port}",service="gateway",upstream="flaky"'
        assert f"gateway_panic_routed_total{{{labels}}} 3.0" in text
        assert "gateway_circuit_open_refusals_total{" not in text
    finally:
        await proxy.close()


async def test_idempotent_requests_retry_on_another_upstream(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url, pair=[dead_url(), upstream.url]))
    async with client.get(gateway.url + "/pair/read") as response:
        assert response.status == 200  # the first choice refused; the retry landed
    assert upstream.count("/pair/read") == 1
    async with client.get(gateway.admin_url + "/metrics") as response:
        assert 'gateway_retries_total{route="pair",service="gateway"} 1.0' in await response.text()


async def test_a_post_is_never_retried(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url, pair=[dead_url(), upstream.url]))
    async with client.post(gateway.url + "/pair/write", json={"a": 1}) as response:
        assert response.status == 502  # round-robin picked the dead host first; no second try
    assert upstream.count("/pair/write") == 0

    # An upstream that takes the POST and dies without answering: one delivery, then 502.
    gateway = await make_gateway(route_table(upstream.url, twins=[upstream.url, upstream.url]))
    async with client.post(gateway.url + "/twins/pay?crash=1", json={"a": 1}) as response:
        assert response.status == 502
    await asyncio.sleep(0.2)
    assert upstream.count("/twins/pay", "POST") == 1


async def test_stale_pooled_connection_is_replaced_for_a_get(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    target = urlsplit(upstream.url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    try:
        gateway = await make_gateway(
            route_table(upstream.url, pooled=[f"http://127.0.0.1:{proxy.port}"])
        )
        async with client.get(gateway.url + "/pooled/a") as response:
            assert response.status == 200
        await proxy.cut()  # drops the idle keep-alive connection the gateway holds
        await proxy.restore()
        await asyncio.sleep(0.05)
        async with client.get(gateway.url + "/pooled/b") as response:
            assert response.status == 200
        assert gateway.groups["pooled"].hosts[0].breaker.consecutive == 0
    finally:
        await proxy.close()

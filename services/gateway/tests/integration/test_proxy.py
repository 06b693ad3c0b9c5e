"""Proxying through a real gateway to a real upstream: headers both ways, streaming,
body limits, request ids and trace context, CORS, the gateway's own endpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import GatewayFactory, Keys, Upstream, raw_request, route_table

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


async def test_get_is_proxied_with_forwarding_headers(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.get(
        gateway.url + "/public/items?x=1",
        headers={"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Accept": "text/x"},
    ) as response:
        assert response.status == 200
        seen = await response.json()
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert seen["path"] == "/public/items"
    assert seen["query"] == "x=1"
    headers = seen["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert headers["accept"] == "text/x"
    assert "x-secret-hop" not in headers  # named in Connection: hop-by-hop
    assert "keep-alive" not in headers


async def test_request_id_and_traceparent_reach_the_upstream(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    status, headers, body = await raw_request(
        gateway.port,
        "GET",
        "/public/a",
        {"X-Request-ID": "req-abc.123", "traceparent": traceparent},
    )
    seen = json.loads(body)
    assert status == 200
    assert headers["x-request-id"] == "req-abc.123"
    assert seen["headers"]["x-request-id"] == "req-abc.123"
    assert seen["headers"]["traceparent"] == traceparent

    status, headers, body = await raw_request(
        gateway.port, "GET", "/public/b", {"X-Request-ID": "bad id with spaces"}
    )
    seen = json.loads(body)
    generated = headers["x-request-id"]
    assert generated != "bad id with spaces"
    assert seen["headers"]["x-request-id"] == generated
    assert TRACEPARENT.fullmatch(seen["headers"]["traceparent"])


async def test_upstream_errors_and_unknown_routes(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.get(gateway.url + "/public/x?status=409") as response:
        assert response.status == 409  # the upstream's answer passes through untouched
    async with client.get(gateway.url + "/nowhere") as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        body = await response.json()
        assert body["status"] == 404
        assert body["instance"] == "/nowhere"
        assert body["request_id"] == response.headers["X-Request-ID"]
    async with client.get(gateway.url + "/api/v1/auth/login") as response:
        assert response.status == 405  # served, for POST only (RFC 9110 §15.5.6)
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["type"].endswith("/method-not-allowed")
    for path in ("/public/../admin/x", "/public/%2e%2e/admin/x", "/public/a%2Fb"):
        status, _, _ = await raw_request(gateway.port, "GET", path)
        assert status == 400  # refused, never normalised into another route


async def test_post_body_streams_to_the_upstream(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    payload = bytes(range(256)) * 4000  # ~1 MB with Content-Length

    async with client.post(gateway.url + "/upload/one", data=payload) as response:
        seen = await response.json()
    assert seen["body_bytes"] == len(payload)

    async def chunks() -> Any:
        for _ in range(50):
            yield b"y" * 10_000

    async with client.post(gateway.url + "/upload/two", data=chunks()) as response:
        seen = await response.json()
    assert seen["body_bytes"] == 500_000
    assert seen["headers"]["transfer-encoding"] == "chunked"


async def test_large_response_streams_to_the_client(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.get(gateway.url + "/public/big?size=5000000") as response:
        assert response.status == 200
        received = 0
        async for chunk in response.content.iter_chunked(65536):
            received += len(chunk)
    assert received == 5_000_000


async def test_head_request(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    for _ in range(2):  # the connection stays usable after a body-less HEAD answer
        async with client.head(gateway.url + "/public/h") as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) > 0
    async with client.get(gateway.url + "/public/after-head") as response:
        assert (await response.json())["path"] == "/public/after-head"


async def test_body_limit_gives_413(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.post(gateway.url + "/small/x", data=b"z" * 2048) as response:
        assert response.status == 413
        assert (await response.json())["type"].endswith("/payload-too-large")

    async def chunks() -> Any:
        for _ in range(4):
            yield b"z" * 1000

    async with client.post(gateway.url + "/small/y", data=chunks()) as response:
        assert response.status == 413
    async with client.post(gateway.url + "/small/z", data=b"ok") as response:
        assert response.status == 200
    assert upstream.count("/small/x") == 0


async def test_cors_preflight_and_actual_request(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with client.options(
        gateway.url + "/api/v1/chat/conversations", headers=preflight
    ) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert "Origin" in response.headers["Vary"]
    async with client.options(
        gateway.url + "/api/v1/chat/conversations",
        headers={**preflight, "Origin": "https://evil.example"},
    ) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    assert upstream.hits == []  # preflights never reach a service

    async with client.get(
        gateway.url + "/public/c", headers={"Origin": "https://app.example"}
    ) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    async with client.get(
        gateway.url + "/public/c", headers={"Origin": "https://evil.example"}
    ) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_health_readiness_and_metrics(
    make_gateway: GatewayFactory, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.get(gateway.url + "/healthz") as response:
        assert response.status == 200
        assert "X-Request-ID" in response.headers
    async with client.get(gateway.url + "/readyz") as response:
        assert response.status == 200
        assert (await response.json())["checks"]["jwks"] == "ok"
    for _ in range(3):
        async with client.get(gateway.url + "/public/m") as response:
            assert response.status == 200
    async with client.get(gateway.admin_url + "/metrics") as response:
        text = await response.text()
    assert (
        'http_requests_total{method="GET",route="public",service="gateway",status="200"} 3.0'
        in text
    )
    assert (
        'http_request_duration_seconds_count{method="GET",route="public",service="gateway"} 3.0'
        in text
    )
    labels = f'host="{upstream.url}",service="gateway",upstream="main"'
    assert f"gateway_upstream_duration_seconds_count{{{labels}}} 3.0" in text
    assert (
        f'gateway_circuit_state{{host="{upstream.url}",service="gateway",upstream="main"}} 0.0'
        in text
    )
    assert (
        f'gateway_upstream_healthy{{host="{upstream.url}",service="gateway",upstream="main"}} 1.0'
        in text
    )


async def test_admin_routes_endpoint(
    make_gateway: GatewayFactory, upstream: Upstream, keys: Keys, client: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    async with client.get(gateway.admin_url + "/gateway/routes") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    user = {"Authorization": "Bearer " + keys.token("u1", ("customer",))}
    async with client.get(gateway.admin_url + "/gateway/routes", headers=user) as response:
        assert response.status == 403
    admin = {"Authorization": "Bearer " + keys.token("root", ("admin",))}
    async with client.get(gateway.admin_url + "/gateway/routes", headers=admin) as response:
        assert response.status == 200
        body = await response.json()
    names = [route["name"] for route in body["routes"]]
    assert "protected" in names and "login" in names
    assert body["upstreams"]["main"][0] == {
        "url": upstream.url,
        "healthy": True,
        "circuit": "closed",
        "consecutive_failures": 0,
        "retry_after": 0.0,
        "in_flight": 0,
        "idle_connections": 0,
        "open_connections": 0,
    }


async def test_access_log_has_one_json_line_per_request(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    keys: Keys,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway = await make_gateway(route_table(upstream.url))
    token = keys.token("user-7")
    async with client.get(
        gateway.url + "/api/v1/chat/x?secret=1", headers={"Authorization": "Bearer " + token}
    ):
        pass
    async with client.get(gateway.url + "/nowhere"):
        pass
    gateway.access_log.flush()
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/api/v1/chat/x", "/nowhere"]
    first = lines[0]
    assert first["route"] == "protected" and first["status"] == 200 and first["user_id"] == "user-7"
    assert first["upstream"] == upstream.url
    assert token not in json.dumps(lines)  # never the token, never the query
    assert lines[1]["status"] == 404 and lines[1]["route"] == "unmatched"


async def test_the_public_listener_shows_strangers_no_metrics_routes_or_server_software(
    make_gateway: GatewayFactory, upstream: Upstream, keys: Keys, client: aiohttp.ClientSession
) -> None:
    """Issue 12 item 7: /metrics and /gateway/routes answer on the admin listener only
    (/healthz and /readyz on both), and no Server header (the upstream's aiohttp one or one
    of ours) reaches a client."""
    gateway = await make_gateway(route_table(upstream.url))
    assert gateway.admin_port != gateway.port
    admin = {"Authorization": "Bearer " + keys.token("root", ("admin",))}
    for path in ("/metrics", "/gateway/routes"):
        async with client.get(gateway.url + path, headers=admin) as response:
            assert response.status == 404, path
            assert response.content_type == "application/problem+json"
        async with client.get(gateway.admin_url + path, headers=admin) as response:
            assert response.status == 200, path
    for path in ("/healthz", "/readyz"):
        for base in (gateway.url, gateway.admin_url):
            async with client.get(base + path) as response:
                assert response.status == 200, (base, path)
                assert "Server" not in response.headers
    async with client.get(gateway.admin_url + "/public/a") as response:
        assert response.status == 404  # the admin listener proxies nothing
    assert upstream.count("/public/a") == 0

    async with client.get(upstream.url + "/public/a") as direct:
        assert "aiohttp" in direct.headers["Server"]  # what the upstream says of itself
    for path in ("/public/a", "/public/a?status=500", "/nowhere"):
        async with client.get(gateway.url + path) as response:
            assert "Server" not in response.headers, path

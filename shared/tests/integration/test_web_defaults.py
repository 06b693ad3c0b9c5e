"""Web defaults every service gets from ``new_app``: problems, request ids, health, metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from pydantic import Field

from switchyard.bus import bus_context
from switchyard.mongo import mongo_context
from switchyard.problems import Problem
from switchyard.settings import ServiceSettings
from switchyard.testing import TcpProxy
from switchyard.web import QueryModel, RequestModel, json_response, new_app, read_json, read_query

pytestmark = pytest.mark.integration


class Widget(RequestModel):
    name: str
    size: int


async def create_widget(request: web.Request) -> web.Response:
    widget = await read_json(request, Widget)
    return json_response({"name": widget.name, "size": widget.size}, status=201)


class WidgetQuery(QueryModel):
    limit: int = Field(10, ge=1, le=50)
    active: bool | None = None


async def list_widgets(request: web.Request) -> web.Response:
    query = read_query(request, WidgetQuery)
    return json_response({"limit": query.limit, "active": query.active})


async def explode(request: web.Request) -> web.Response:
    raise RuntimeError("db password is hunter2 at mongo-internal:27017")


async def teapot(request: web.Request) -> web.Response:
    raise Problem(409, "That widget exists already.", slug="widget-exists")


def widget_app(**overrides) -> web.Application:
    settings = ServiceSettings(service_name="widgets", **{"max_body_bytes": 4096, **overrides})
    app = new_app(settings)
    app.router.add_post("/api/v1/widgets", create_widget)
    app.router.add_get("/api/v1/widget-search", list_widgets)
    app.router.add_get("/api/v1/widgets/{id}/explode", explode)
    app.router.add_get("/api/v1/conflict", teapot)
    return app


@pytest.fixture
async def client(start_app, settings_overrides):
    server = await start_app(widget_app(**settings_overrides))
    async with aiohttp.ClientSession(server.url) as session:
        yield session


async def problem(response: aiohttp.ClientResponse) -> dict:
    assert response.content_type == "application/problem+json"
    body = await response.json(content_type=None)
    assert body["status"] == response.status
    assert body["type"].startswith("https://switchyard.dev/problems/")
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


async def test_valid_body_is_accepted(client):
    async with client.post("/api/v1/widgets", json={"name": "w", "size": 3}) as r:
        assert r.status == 201
        assert await r.json() == {"name": "w", "size": 3}


@pytest.mark.parametrize(
    "body",
    [gzip.compress(b'{"name": "' + b"a" * (64 * 1024 * 1024) + b'", "size": 1}'), b"not gzip"],
    ids=["gzip-bomb", "broken-gzip"],
)
async def test_compressed_bodies_are_refused_not_inflated(client, body):
    """A 64 MiB gzip bomb (65 KB sent) was inflated by the HTTP parser on the event loop
    before the 4 KiB limit refused it; a body that is not gzip at all was a 500."""
    async with client.post(
        "/api/v1/widgets",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ) as r:
        assert r.status == 415
        assert r.headers["Accept-Encoding"] == "identity"
        assert (await problem(r))["type"].endswith("/unsupported-content-encoding")
    # The event loop was not held: the server answers a plain request at once.
    async with client.post("/api/v1/widgets", json={"name": "w", "size": 3}) as r:
        assert r.status == 201


async def test_malformed_json_is_400(client):
    async with client.post(
        "/api/v1/widgets", data=b'{"name": ', headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
        assert (await problem(r))["type"].endswith("/malformed-json")


async def test_validation_errors_are_422_with_errors(client):
    async with client.post("/api/v1/widgets", json={"size": "big", "colour": "red"}) as r:
        assert r.status == 422
        body = await problem(r)
        locations = {e["location"]: e["code"] for e in body["errors"]}
        assert locations == {
            "/name": "missing",
            "/size": "int_type",
            "/colour": "extra_forbidden",
        }
        assert body["instance"] == "/api/v1/widgets"


async def test_wrong_json_types_are_not_coerced(client):
    async with client.post("/api/v1/widgets", json={"name": "w", "size": "12"}) as r:
        assert r.status == 422
        assert [e["location"] for e in (await problem(r))["errors"]] == ["/size"]
    async with client.post("/api/v1/widgets", json={"name": 5, "size": 1}) as r:
        assert r.status == 422
        assert [e["location"] for e in (await problem(r))["errors"]] == ["/name"]


async def test_query_strings_parse_text_and_refuse_what_does_not_fit(client):
    async with client.get("/api/v1/widget-search?limit=5&active=true") as r:
        assert await r.json() == {"limit": 5, "active": True}
    async with client.get("/api/v1/widget-search?limit=500&colour=red") as r:
        assert r.status == 422
        body = await problem(r)
        assert {e["location"] for e in body["errors"]} == {"/limit", "/colour"}
        assert body["detail"] == "The query parameters failed validation."


async def test_non_json_content_type_is_415(client):
    async with client.post("/api/v1/widgets", data="name=w") as r:
        assert r.status == 415
        await problem(r)


async def test_unknown_path_is_404(client):
    async with client.get("/api/v1/nothing-here") as r:
        assert r.status == 404
        assert (await problem(r))["type"].endswith("/not-found")


async def test_wrong_method_is_405_with_allow(client):
    async with client.delete("/api/v1/widgets") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
        await problem(r)


async def test_oversized_body_is_413(client):
    async with client.post(
        "/api/v1/widgets", data=b"x" * 10_000, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 413
        assert (await problem(r))["type"].endswith("/payload-too-large")


async def test_unhandled_exception_is_500_without_internals_and_logged(client, caplog):
    caplog.set_level(logging.ERROR, logger="switchyard.web")
    async with client.get("/api/v1/widgets/9/explode") as r:
        assert r.status == 500
        text = await r.text()
        body = await problem(r)
    assert "hunter2" not in text and "RuntimeError" not in text and "Traceback" not in text
    assert body["detail"] == "The server could not complete the request."
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.exc_info and record.exc_info[0] is RuntimeError


async def test_domain_problem_keeps_its_type(client):
    async with client.get("/api/v1/conflict") as r:
        assert r.status == 409
        assert (await problem(r))["type"] == "https://switchyard.dev/problems/widget-exists"


async def test_request_id_is_accepted_or_generated(client):
    async with client.get("/healthz", headers={"X-Request-ID": "abc-123"}) as r:
        assert r.headers["X-Request-ID"] == "abc-123"
    async with client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\u2028"}) as r:
        generated = r.headers["X-Request-ID"]
        assert generated != "bad id with spaces" and len(generated) == 32


async def test_metrics_count_requests_by_route_template(client):
    async with client.post("/api/v1/widgets", json={"name": "w", "size": 1}):
        pass
    async with client.get("/api/v1/widgets/42/explode"):
        pass
    async with client.get("/metrics") as r:
        text = await r.text()
    assert (
        'http_requests_total{method="POST",route="/api/v1/widgets",'
        'service="widgets",status="201"} 1.0' in text
    )
    assert 'route="/api/v1/widgets/{id}/explode"' in text and "/widgets/42" not in text
    assert "http_request_duration_seconds_bucket" in text


async def test_readyz_reports_503_while_the_broker_is_down(
    start_app, settings_overrides, broker_cleanup
):
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    url = settings_overrides["amqp_url"].replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    app = widget_app(**{**settings_overrides, "amqp_url": url})
    app.cleanup_ctx.append(mongo_context())
    app.cleanup_ctx.append(bus_context)
    server = await start_app(app)
    async with aiohttp.ClientSession(server.url) as session:
        async with session.get("/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {"database": "ok", "broker": "ok"}
        await proxy.cut()
        async with session.get("/readyz") as r:
            assert r.status == 503  # at once: the check makes a round trip to the broker
            body = await problem(r)
            # Check names and a verdict only: no exception class or other internal name.
            assert body["checks"] == {"broker": "failing", "database": "ok"}
            assert "Error" not in json.dumps(body) and "Connection" not in json.dumps(body)
        async with session.get("/healthz") as r:
            assert r.status == 200  # alive, just not ready
        await proxy.restore()
        for _ in range(100):
            async with session.get("/readyz") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status == 200
    await proxy.close()


async def test_readyz_reports_503_while_the_store_is_down(start_app, settings_overrides, mongo_url):
    host_port = mongo_url.split("//", 1)[1].rstrip("/")
    host, port = host_port.split(":")
    proxy = await TcpProxy(host, int(port)).start()
    app = widget_app(**{**settings_overrides, "mongo_url": f"mongodb://127.0.0.1:{proxy.port}/"})
    app.cleanup_ctx.append(mongo_context())
    server = await start_app(app)
    async with aiohttp.ClientSession(server.url) as session:
        async with session.get("/readyz") as r:
            assert r.status == 200
        await proxy.cut()
        async with session.get("/readyz") as r:
            assert r.status == 503
            body = await r.json(content_type=None)
            assert body["checks"] == {"database": "failing"}
            assert "Error" not in json.dumps(body) and "Timeout" not in json.dumps(body)
        await proxy.restore()
    await proxy.close()


async def test_compressed_request_bodies_are_refused_whatever_the_coding(
    start_app, settings_overrides
):
    """``new_app``: a body with a Content-Encoding is 415 with ``Accept-Encoding:
    identity``, never inflated, whichever coding and however many fields; identity bodies
    are as before."""
    import gzip

    body = gzip.compress(json.dumps({"name": "w", "size": 3}).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    strict = widget_app(**settings_overrides)
    server = await start_app(strict)
    async with aiohttp.ClientSession(server.url) as session:
        for coding in ("gzip", "deflate", "br", "x-gzip, identity"):
            async with session.post(
                "/api/v1/widgets", data=body, headers={**headers, "Content-Encoding": coding}
            ) as r:
                assert r.status == 415, coding
                assert (await problem(r))["type"].endswith("/unsupported-content-encoding")
                assert r.headers["Accept-Encoding"] == "identity"
        twice = [("Content-Type", "application/json")]
        twice += [("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]
        async with session.post("/api/v1/widgets", data=body, headers=CIMultiDict(twice)) as r:
            assert r.status == 415  # the second field counts too
        for coding in ("identity", ""):
            async with session.post(
                "/api/v1/widgets",
                json={"name": "w", "size": 3},
                headers={"Content-Encoding": coding},
            ) as r:
                assert r.status == 201, coding

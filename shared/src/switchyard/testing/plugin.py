"""pytest fixtures: the real broker, the embedded MongoDB-wire server (or a real MongoDB),
an SMTP sink, a JWKS server, per-test names so runs never collide, and app servers on
loopback.

Where a Docker engine answers, RabbitMQ and MongoDB come from testcontainers;
otherwise the machine's RabbitMQ (``AMQP_URL``) and the embedded ``nx-27017``
server (unless ``MONGO_URL`` names a real MongoDB).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from pymongo import AsyncMongoClient

from switchyard.logging import configure_logging
from switchyard.mongo.embedded import EmbeddedMongo
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN, JwksServer
from switchyard.testing.servers import AppServer, delete_exchange, docker_available
from switchyard.testing.smtp import SmtpSink
from switchyard.tracing import configure_tracing

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("tests", os.environ.get("LOG_LEVEL", "INFO"), "console")
    configure_tracing("tests")  # a real provider, so trace context propagates as in services


@pytest.fixture(scope="session")
def docker_engine() -> bool:
    return docker_available()


@pytest.fixture(scope="session")
def amqp_url(docker_engine: bool) -> Iterator[str]:
    if os.environ.get("AMQP_URL") or not docker_engine:
        yield os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
        return
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management") as container:
        params = container.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
def mongo_server(
    docker_engine: bool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(url, backend): backend is ``mongodb`` for a real server, ``embedded`` for nx-27017."""
    if os.environ.get("MONGO_URL"):
        yield os.environ["MONGO_URL"], "mongodb"
        return
    if docker_engine:
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7.0") as container:
            yield container.get_connection_url(), "mongodb"
        return
    with EmbeddedMongo(tmp_path_factory.mktemp("mongo")) as server:
        yield server.url, "embedded"


@pytest.fixture(scope="session")
def mongo_url(mongo_server: tuple[str, str]) -> str:
    return mongo_server[0]


@pytest.fixture(scope="session")
def store_backend(mongo_server: tuple[str, str]) -> str:
    return mongo_server[1]


@pytest.fixture
def unique_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings_overrides(amqp_url: str, mongo_url: str, unique_name: str) -> dict[str, Any]:
    """Settings that give one test its own database, exchange and queues, with short retries."""
    return {
        "environment": "test",
        "amqp_url": amqp_url,
        "mongo_url": mongo_url,
        "mongo_database": unique_name,
        "bus_exchange": f"switchyard.events.{unique_name}",
        "bus_queue_prefix": f"{unique_name}.",
        "bus_retry_delays": [0.3, 0.6],
        "bus_queue_expires_ms": 60_000,
        # Expiring quorum queues stall RabbitMQ 3.10 for seconds (see switchyard.bus.topology);
        # the bus's own tests of quorum behaviour (delivery limits) ask for quorum queues.
        "bus_queue_type": "classic",
        "outbox_poll_interval": 0.1,
        "log_format": "console",
        "shutdown_timeout": 2.0,
        "internal_api_token": TEST_INTERNAL_TOKEN,
    }


@pytest.fixture
async def broker_cleanup(amqp_url: str, settings_overrides: dict[str, Any]) -> AsyncIterator[None]:
    """Delete the test's exchange afterwards (its queues expire on their own)."""
    yield
    await delete_exchange(amqp_url, settings_overrides["bus_exchange"])


@pytest.fixture
async def mongo_client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[dict[str, Any]], unique_name: str
) -> AsyncIterator[Any]:
    db = mongo_client[unique_name]
    yield db
    await mongo_client.drop_database(unique_name)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    """Auth's JWKS endpoint as services see it (issuer ``https://auth.test``): point
    ``jwks_url``/``auth_issuer``/``jwt_audience`` at it and sign tokens with ``.token(...)``."""
    async with JwksServer() as server:
        yield server


@pytest.fixture
async def start_app() -> AsyncIterator[Callable[[web.Application], Any]]:
    """``server = await start_app(app)``: run an app on 127.0.0.1 (on ``port=`` when given, say
    one the app's settings name); stopped after the test."""
    servers: list[AppServer] = []

    async def start(app: web.Application, port: int | None = None) -> AppServer:
        server = await AppServer(app, port=port).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop()

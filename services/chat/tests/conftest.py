"""Fixtures of the chat service's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from chat_svc.app import create_app
from chat_svc.settings import ChatSettings
from switchyard.testing import (
    JwksServer,
    delete_exchange,
    service_bus,
    settings_builder,
    tap_events,
)

from .support import ChatReplica, ChatWorld


@pytest.fixture
def chat_settings(
    settings_overrides: dict[str, Any], jwks_server: JwksServer, unique_name: str
) -> Callable[..., ChatSettings]:
    return settings_builder(
        ChatSettings,
        settings_overrides,
        jwks_server.auth_settings,
        {
            "socketio_exchange": f"switchyard.socketio.{unique_name}",
            "presence_heartbeat": 0.5,
            "presence_ttl": 2.0,
            "seq_hole_after": 1.0,
        },
    )


@pytest.fixture
async def start_world(
    chat_settings: Callable[..., ChatSettings],
    settings_overrides: dict[str, Any],
    jwks_server: JwksServer,
    start_app: Any,
    broker_cleanup: None,
    unique_name: str,
) -> AsyncIterator[Callable[..., Any]]:
    """``world = await start_world(replicas=1, gateway=True, **settings)``."""
    worlds: list[ChatWorld] = []
    gateways: list[Any] = []

    async def start(replicas: int = 1, gateway: bool = True, **overrides: Any) -> ChatWorld:
        started = []
        for _ in range(replicas):
            app = create_app(chat_settings(**overrides))
            started.append(ChatReplica(app, await start_app(app)))
        tap = await tap_events(settings_overrides, "chat.#")
        publisher = service_bus(settings_overrides, "auth")
        await publisher.connect()
        world = ChatWorld(
            replicas=started,
            publisher=publisher,
            keys_server=jwks_server,
            http=aiohttp.ClientSession(),
            tap=tap,
        )
        if gateway:
            world.gateway_url = await _gateway([r.url for r in started], jwks_server, gateways)
        worlds.append(world)
        return world

    yield start
    for world in worlds:
        await world.close()
    for gateway in reversed(gateways):
        await gateway.stop(grace=0.5)
    for world in worlds:
        await world.tap.close()
        await world.publisher.close()
        await world.http.close()
    await delete_exchange(settings_overrides["amqp_url"], f"switchyard.socketio.{unique_name}")


async def _gateway(upstreams: list[str], jwks_server: JwksServer, started: list[Any]) -> str:
    """The real gateway (its shipped route table) on loopback in front of the replicas; it
    trusts loopback's X-Forwarded-For so a test picks a socket's sticky replica."""
    from gateway_svc.app import create_app as create_gateway
    from gateway_svc.settings import GatewaySettings
    from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
    from switchyard.testing.servers import free_port

    settings = GatewaySettings(
        environment="test",
        port=free_port(),
        admin_port=0,  # the admin listener on any free port
        internal_api_token=TEST_INTERNAL_TOKEN,  # the test JWKS server's revoked list
        chat_upstreams=upstreams,
        jwks_url=jwks_server.jwks_url,
        auth_issuer=jwks_server.issuer,
        jwt_audience=jwks_server.audience,
        trusted_proxies=["127.0.0.1/32"],
        access_log="off",
        shutdown_timeout=1.0,
    )
    gateway = create_gateway(settings)
    await gateway.start()
    started.append(gateway)
    return f"http://127.0.0.1:{settings.port}"


@pytest.fixture
async def world(start_world: Callable[..., Any]) -> ChatWorld:
    return await start_world()

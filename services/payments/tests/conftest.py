"""Fixtures of the payments service's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from payments_svc.app import create_app
from payments_svc.settings import PaymentsSettings
from switchyard.testing import JwksServer, settings_builder, tap_events

from .support import RunningService, publisher_bus

WEBHOOK_SECRET = "whsec_test_" + "s" * 24


@pytest.fixture
def service_settings(
    settings_overrides: dict[str, Any], jwks_server: JwksServer
) -> Callable[..., PaymentsSettings]:
    return settings_builder(
        PaymentsSettings,
        settings_overrides,
        jwks_server.auth_settings,
        {
            "ledger_sweep_interval": 0.2,
            "ledger_stale_after": 2.0,
            "ledger_check_interval": 3600.0,
            "stripe_webhook_secret": WEBHOOK_SECRET,
        },
    )


@pytest.fixture
async def start_service(
    service_settings: Callable[..., PaymentsSettings],
    settings_overrides: dict[str, Any],
    jwks_server: JwksServer,
    start_app: Any,
    broker_cleanup: None,
) -> AsyncIterator[Callable[..., Any]]:
    """``service = await start_service(**settings)``: the app running with its consumers."""
    opened: list[Any] = []

    async def start(observer: Any = None, **overrides: Any) -> RunningService:
        app = create_app(service_settings(**overrides), observer=observer)
        tap = await tap_events(settings_overrides, "payments.#")
        server = await start_app(app)
        publisher = publisher_bus(settings_overrides)
        await publisher.connect()
        http = aiohttp.ClientSession()
        opened.extend([publisher, tap, http])
        return RunningService(
            app=app, server=server, publisher=publisher, keys_server=jwks_server, http=http, tap=tap
        )

    yield start
    for resource in reversed(opened):
        await resource.close()


@pytest.fixture
async def service(start_service: Callable[..., Any]) -> RunningService:
    return await start_service()


@pytest.fixture
async def gateway(jwks_server: JwksServer) -> AsyncIterator[Callable[..., Any]]:
    """``url = await gateway(service)``: the real gateway (its shipped route table) on
    loopback in front of ``service``."""
    from gateway_svc.app import create_app as create_gateway
    from gateway_svc.settings import GatewaySettings
    from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
    from switchyard.testing.servers import free_port

    started: list[Any] = []

    async def start(service: RunningService) -> str:
        settings = GatewaySettings(
            environment="test",
            port=free_port(),
            admin_port=0,  # the admin listener on any free port
            internal_api_token=TEST_INTERNAL_TOKEN,  # the test JWKS server's revoked list
            payments_upstreams=[service.url],
            jwks_url=jwks_server.jwks_url,
            auth_issuer=jwks_server.issuer,
            jwt_audience=jwks_server.audience,
            access_log="off",
            shutdown_timeout=1.0,
        )
        gateway = create_gateway(settings)
        await gateway.start()
        started.append(gateway)
        return f"http://127.0.0.1:{settings.port}"

    yield start
    for gateway in reversed(started):
        await gateway.stop(grace=0.5)


@pytest.fixture
async def fake_stripe() -> AsyncIterator[Any]:
    from .stripe_fake import FakeStripe

    fake = await FakeStripe(webhook_secret=WEBHOOK_SECRET).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def stripe_service(start_service: Callable[..., Any], fake_stripe: Any) -> RunningService:
    """The service with the Stripe provider, pointed at the local fake."""
    return await start_service(
        payments_provider="stripe",
        stripe_secret_key=fake_stripe.api_key,
        stripe_api_base=fake_stripe.url,
        stripe_webhook_secret=WEBHOOK_SECRET,
    )

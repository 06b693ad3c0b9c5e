"""Fixtures of the notification service's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from notification_svc.app import create_app
from notification_svc.settings import NotificationSettings
from switchyard.testing import FakeFcm, JwksServer, settings_builder

from .support import RunningService, publisher_bus


@pytest.fixture
def service_settings(
    settings_overrides: dict[str, Any], jwks_server: JwksServer
) -> Callable[..., NotificationSettings]:
    """``service_settings(smtp_port=…, …)``: the test's settings with its own namespace."""
    return settings_builder(
        NotificationSettings,
        settings_overrides,
        jwks_server.auth_settings,
        {
            "smtp_host": "127.0.0.1",
            "mail_from": "Switchyard <no-reply@switchyard.test>",
        },
    )


@pytest.fixture
async def start_service(
    service_settings: Callable[..., NotificationSettings],
    settings_overrides: dict[str, Any],
    start_app: Any,
    broker_cleanup: None,
) -> AsyncIterator[Callable[..., Any]]:
    """``service = await start_service(smtp_port=…)``: the app running with its consumers."""
    publishers = []

    async def start(**overrides: Any) -> RunningService:
        app = create_app(service_settings(**overrides))
        server = await start_app(app)
        publisher = publisher_bus(settings_overrides)
        await publisher.connect()
        publishers.append(publisher)
        return RunningService(app=app, server=server, publisher=publisher)

    yield start
    for publisher in publishers:
        await publisher.close()


@pytest.fixture
async def fake_fcm() -> AsyncIterator[FakeFcm]:
    """A local FCM (v1 send + OAuth token endpoint), driven through firebase-admin itself."""
    fcm = await FakeFcm().start()
    yield fcm
    await fcm.stop()


@pytest.fixture
def fcm_settings(fake_fcm: FakeFcm, tmp_path: Any) -> dict[str, Any]:
    """Settings pointing the service at the fake FCM with a generated service-account key."""
    credentials = fake_fcm.write_credentials(tmp_path / "service-account.json")
    return {"fcm_credentials_file": credentials, "fcm_endpoint": fake_fcm.url}

"""contracts/http/notification.yaml and the app's routes describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from notification_svc.app import create_app
from notification_svc.domain.deliveries import DeliveryStatus
from notification_svc.domain.preferences import CATEGORIES, CHANNELS
from notification_svc.settings import NotificationSettings

SPEC = Path(__file__).resolve().parents[4] / "contracts" / "http" / "notification.yaml"
SHARED_ROUTES = {"/healthz", "/readyz", "/metrics"}  # every service's, from switchyard.web
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text()))


def test_every_route_is_in_the_spec_and_vice_versa(spec: dict[str, Any]) -> None:
    app = create_app(NotificationSettings(environment="test"))
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical not in SHARED_ROUTES
    }
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }
    assert spec["openapi"].startswith("3.")
    assert routes == documented


def test_the_enumerations_are_the_domains(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert tuple(schemas["Category"]["enum"]) == CATEGORIES
    assert tuple(schemas["Channel"]["enum"]) == CHANNELS
    assert tuple(schemas["DeliveryStatus"]["enum"]) == get_args(DeliveryStatus)
    assert tuple(schemas["Switches"]["properties"]) == CHANNELS
    assert tuple(schemas["PreferencesUpdate"]["properties"]["preferences"]["properties"]) == (
        CATEGORIES
    )

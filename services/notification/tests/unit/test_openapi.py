"""contracts/http/notification.yaml and the app's routes describe the same API."""

from __future__ import annotations

from typing import Any, get_args

from notification_svc.app import create_app
from notification_svc.domain.deliveries import DeliveryStatus
from notification_svc.domain.preferences import ALWAYS_SENT, CATEGORIES, CHANNELS
from notification_svc.entrypoints.http import BroadcastRequest, DeviceRegistration, WebhookCreate
from notification_svc.settings import NotificationSettings
from switchyard.testing.contracts import (
    assert_routes_match_contract,
    assert_schema_matches_model,
    load_contract,
)


def spec() -> dict[str, Any]:
    return load_contract("notification")


def test_every_route_is_in_the_spec_and_vice_versa() -> None:
    app = create_app(NotificationSettings(environment="test"))
    assert_routes_match_contract(app, "notification")


def _body(path: str, method: str = "post") -> dict[str, Any]:
    content = spec()["paths"][path][method]["requestBody"]["content"]
    return dict(content["application/json"]["schema"])


def test_request_bodies_match_the_models() -> None:
    for path, model in (
        ("/api/v1/notifications/webhooks", WebhookCreate),
        ("/api/v1/notifications/devices", DeviceRegistration),
        ("/api/v1/notifications/broadcast", BroadcastRequest),
    ):
        assert_schema_matches_model(_body(path), model)


def test_the_enumerations_are_the_domains() -> None:
    schemas = spec()["components"]["schemas"]
    assert tuple(schemas["Category"]["enum"]) == CATEGORIES
    assert tuple(schemas["Channel"]["enum"]) == CHANNELS
    assert tuple(schemas["DeliveryStatus"]["enum"]) == get_args(DeliveryStatus)


def test_the_preferences_update_states_the_always_on_categories() -> None:
    """Every category and channel can be given; signup/security only take `true` (the
    service refuses `false` with 422 cannot-opt-out), the others any boolean."""
    schemas = spec()["components"]["schemas"]
    put = spec()["paths"]["/api/v1/notifications/preferences"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PreferencesUpdate"}
    update = schemas["PreferencesUpdate"]
    assert update["additionalProperties"] is False
    matrix = update["properties"]["preferences"]
    assert matrix["additionalProperties"] is False
    assert tuple(matrix["properties"]) == CATEGORIES
    for category, switches in matrix["properties"].items():
        name = "AlwaysOnSwitches" if category in ALWAYS_SENT else "Switches"
        assert switches == {"$ref": f"#/components/schemas/{name}"}, category
    for name, allowed in (("Switches", {"type": "boolean"}), ("AlwaysOnSwitches", {"const": True})):
        assert schemas[name]["additionalProperties"] is False
        assert schemas[name]["properties"] == dict.fromkeys(CHANNELS, allowed), name

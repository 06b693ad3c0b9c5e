"""contracts/http/payments.yaml and the app's routes describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from payments_svc.app import create_app
from payments_svc.entrypoints import http
from payments_svc.settings import PaymentsSettings

SPEC = Path(__file__).resolve().parents[4] / "contracts" / "http" / "payments.yaml"
SHARED_ROUTES = {"/healthz", "/readyz", "/metrics"}
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text()))


def test_every_route_is_in_the_spec_and_vice_versa(spec: dict[str, Any]) -> None:
    app = create_app(PaymentsSettings(environment="test"))
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
    assert {(m, p.replace("{id:[A-Za-z0-9_-]{1,80}}", "{id}")) for m, p in routes} == documented


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        ("AmountRequest", http.AmountBody),
        ("OfferRequest", http.OfferBody),
        ("ReasonRequest", http.ReasonBody),
        ("PayoutAccount", http.PayoutAccountBody),
        ("AdjustmentRequest", http.AdjustmentBody),
        ("DepositRefundRequest", http.DepositRefundBody),
        ("Money", http.MoneyIn),
    ],
)
def test_request_bodies_match_the_models(spec: dict[str, Any], schema: str, model: Any) -> None:
    documented = spec["components"]["schemas"][schema]
    generated = model.model_json_schema()
    assert documented["additionalProperties"] is False
    assert set(documented["properties"]) == set(generated["properties"])
    assert set(documented["required"]) == set(generated.get("required", []))

"""contracts/http/payments.yaml and the app's routes describe the same API."""

from __future__ import annotations

from typing import Any

import pytest

from payments_svc.app import create_app
from payments_svc.entrypoints import http
from payments_svc.settings import PaymentsSettings
from switchyard.testing.contracts import (
    assert_routes_match_contract,
    assert_schema_matches_model,
    load_contract,
)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_contract("payments")


def test_every_route_is_in_the_spec_and_vice_versa() -> None:
    app = create_app(PaymentsSettings(environment="test"))
    assert_routes_match_contract(app, "payments")


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
    assert_schema_matches_model(spec["components"]["schemas"][schema], model)

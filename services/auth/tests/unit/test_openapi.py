"""contracts/http/auth.yaml and the app's routes describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auth_svc.app import create_app
from auth_svc.entrypoints import bodies
from auth_svc.settings import AuthSettings
from switchyard.testing.contracts import (
    assert_routes_match_contract,
    assert_schema_matches_model,
    load_contract,
)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_contract("auth")


def test_every_route_is_in_the_spec_and_vice_versa(tmp_path: Path) -> None:
    app = create_app(AuthSettings(keys_dir=tmp_path, environment="test"))
    assert_routes_match_contract(app, "auth")


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        ("RegisterRequest", bodies.RegisterBody),
        ("VerifyEmailRequest", bodies.VerifyEmailBody),
        ("ResendRequest", bodies.ResendBody),
        ("LoginRequest", bodies.LoginBody),
        ("SignInCodeRequest", bodies.SignInCodeBody),
        ("SignInCodeVerifyRequest", bodies.SignInCodeVerifyBody),
        ("RefreshRequest", bodies.RefreshBody),
        ("ForgotRequest", bodies.ForgotBody),
        ("ResetRequest", bodies.ResetBody),
        ("ChangePasswordRequest", bodies.ChangePasswordBody),
        ("ProfilePatch", bodies.ProfilePatch),
        ("DeleteAccountRequest", bodies.DeleteAccountBody),
    ],
)
def test_request_bodies_match_the_models(spec: dict[str, Any], schema: str, model: Any) -> None:
    assert_schema_matches_model(spec["components"]["schemas"][schema], model)

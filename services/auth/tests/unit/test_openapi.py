"""contracts/http/auth.yaml and the app's routes describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from auth_svc.app import create_app
from auth_svc.entrypoints import bodies
from auth_svc.settings import AuthSettings

SPEC = Path(__file__).resolve().parents[4] / "contracts" / "http" / "auth.yaml"
SHARED_ROUTES = {"/healthz", "/readyz", "/metrics"}  # every service's, from switchyard.web
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text()))


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(AuthSettings(keys_dir=tmp_path, environment="test"))
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path in SHARED_ROUTES:
            continue
        routes.add((route.method, path))
    return routes


def spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_in_the_spec_and_vice_versa(spec: dict[str, Any], tmp_path: Path) -> None:
    assert spec["openapi"].startswith("3.")
    assert app_routes(tmp_path) == spec_routes(spec)


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
    documented = spec["components"]["schemas"][schema]
    generated = model.model_json_schema()
    assert documented["additionalProperties"] is False
    assert set(documented["properties"]) == set(generated["properties"])
    assert set(documented["required"]) == set(generated.get("required", []))

"""contracts/http/file.yaml and the app's routes describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from file_svc.app import create_app
from file_svc.entrypoints.http import ShareRequest
from file_svc.settings import FileSettings

SPEC = Path(__file__).resolve().parents[4] / "contracts" / "http" / "file.yaml"
SHARED_ROUTES = {"/healthz", "/readyz", "/metrics"}
METHODS = {"get", "put", "post", "patch", "delete"}


def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text()))


def test_every_route_is_in_the_spec_and_vice_versa(tmp_path: Path) -> None:
    app = create_app(FileSettings(environment="test", storage=str(tmp_path)))
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical not in SHARED_ROUTES
    }
    documented = {
        (method.upper(), path)
        for path, item in spec()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert routes == documented


def test_the_share_request_matches_the_model() -> None:
    documented = spec()["components"]["schemas"]["ShareRequest"]
    generated = ShareRequest.model_json_schema()
    assert documented["additionalProperties"] is False
    assert set(documented["properties"]) == set(generated["properties"])
    assert set(documented["required"]) == set(generated["required"])
    assert (
        documented["properties"]["expires_in"]["maximum"]
        == generated["properties"]["expires_in"]["maximum"]
    )

"""contracts/http/file.yaml and the app's routes describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from file_svc.app import create_app
from file_svc.entrypoints.http import ShareRequest
from file_svc.settings import FileSettings
from switchyard.testing.contracts import (
    assert_routes_match_contract,
    assert_schema_matches_model,
    load_contract,
)


def spec() -> dict[str, Any]:
    return load_contract("file")


def test_every_route_is_in_the_spec_and_vice_versa(tmp_path: Path) -> None:
    app = create_app(FileSettings(environment="test", storage=str(tmp_path)))
    assert_routes_match_contract(app, "file")


def test_the_share_request_matches_the_model() -> None:
    documented = spec()["components"]["schemas"]["ShareRequest"]
    assert_schema_matches_model(documented, ShareRequest)
    generated = ShareRequest.model_json_schema()
    assert (
        documented["properties"]["expires_in"]["maximum"]
        == generated["properties"]["expires_in"]["maximum"]
    )

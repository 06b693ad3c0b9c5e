"""contracts/http/chat.yaml and the app's routes describe the same API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chat_svc.app import create_app
from chat_svc.entrypoints import http
from chat_svc.settings import ChatSettings

SPEC = Path(__file__).resolve().parents[4] / "contracts" / "http" / "chat.yaml"
NOT_IN_THE_SPEC = {"/healthz", "/readyz", "/metrics", "/socket.io/"}
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text()))


def test_every_route_is_in_the_spec_and_vice_versa(spec: dict[str, Any]) -> None:
    app = create_app(ChatSettings(environment="test"))
    routes = {
        (route.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        and route.resource.canonical not in NOT_IN_THE_SPEC
    }
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }
    assert routes == documented


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        ("CreateConversation", http.CreateConversation),
        ("SendMessage", http.SendBody),
        ("EditMessage", http.EditBody),
        ("MarkRead", http.ReadBody),
        ("AddMember", http.MemberBody),
        ("Mute", http.MuteBody),
    ],
)
def test_request_bodies_match_the_models(spec: dict[str, Any], schema: str, model: Any) -> None:
    documented = spec["components"]["schemas"][schema]
    generated = model.model_json_schema()
    assert documented["additionalProperties"] is False
    assert set(documented["properties"]) == set(generated["properties"])
    assert set(documented["required"]) == set(generated.get("required", []))

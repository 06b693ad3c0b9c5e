"""contracts/http/chat.yaml and the app's routes describe the same API."""

from __future__ import annotations

from typing import Any

import pytest

from chat_svc.app import create_app
from chat_svc.entrypoints import http
from chat_svc.settings import ChatSettings
from switchyard.testing.contracts import (
    assert_routes_match_contract,
    assert_schema_matches_model,
    load_contract,
)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_contract("chat")


def test_every_route_is_in_the_spec_and_vice_versa() -> None:
    app = create_app(ChatSettings(environment="test"))
    # Socket.IO's endpoint is described by contracts/sockets, not the HTTP contract.
    assert_routes_match_contract(app, "chat", ignore={"/socket.io/"})


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
    assert_schema_matches_model(spec["components"]["schemas"][schema], model)

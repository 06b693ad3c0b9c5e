"""contracts/http/chat.yaml holds against the running service, reached the way clients
reach it: through a real gateway in front of the service (the shipped route table, rate limits
raised): schemathesis (every check but ``ignored_auth``, bounded, a fixed seed) finds no
server error and no answer the contract does not describe (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from switchyard.testing import JwksServer
from switchyard.testing.contracts import contract_path, fuzz_contract, gateway_in_front

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


async def test_the_chat_contract_holds_under_fuzzing(
    start_world: Callable[..., Any], jwks_server: JwksServer, settings_overrides: dict[str, Any]
) -> None:
    world = await start_world(gateway=False)
    caller, other, third = await world.user(), await world.user(), await world.user()
    # Real ids for most cases, so they reach past the 404 of a random id: a group the
    # caller administers, its members, a message of the caller's in it (direct conversations
    # come from createConversation's cases).
    group = await world.group(caller, [other, third])
    sent = await world.call(
        "POST",
        f"/conversations/{group}/messages",
        uid=caller,
        body={"body": "hello", "client_msg_id": "c1"},
    )
    assert sent.status == 201, sent.body
    await _body_refusals_are_as_documented(world, caller, group)
    async with gateway_in_front(
        "chat", world.replicas[0].url, jwks_server, settings_overrides
    ) as edge:
        result = await fuzz_contract(
            "chat",
            edge,
            headers={"Authorization": f"Bearer {world.token(caller)}"},
            known_values={
                "path.id": [group],
                "path.message_id": [sent.body["message"]["id"]],
                "path.user_id": [other, third],
                "body.user_id": [other, third],
                "body.member_ids[*]": [other, third],
            },
        )
    assert result.passed, result.report
    # Every documented operation ran (none dropped by a filter or a schema it could not read).
    paths = yaml.safe_load(contract_path("chat").read_text())["paths"]
    operations = sum(
        m in {"get", "put", "post", "patch", "delete"} for i in paths.values() for m in i
    )
    assert f"{operations} selected / {operations} total" in result.report, result.report
    assert "Authentication failed" not in result.report, result.report


async def _body_refusals_are_as_documented(world: Any, caller: str, group: str) -> None:
    """The contract's 400/413/415 on a JSON-body operation are what the service answers
    (the fuzzer stays under MAX_BODY_BYTES, so 413 is checked here)."""
    url = f"{world.replicas[0].url}/api/v1/chat/conversations/{group}/messages"
    auth = {"Authorization": f"Bearer {world.token(caller)}"}
    cases = [
        ("application/json", b'{"body": "x", "client_msg_id": ', 400, "malformed-json"),
        ("text/plain", b'{"body": "x", "client_msg_id": "c2"}', 415, "unsupported-media-type"),
        ("application/json", b'{"body": "' + b"x" * (1024 * 1024) + b'"}', 413, None),
    ]
    for content_type, data, status, slug in cases:
        headers = {**auth, "Content-Type": content_type}
        async with world.http.post(url, data=data, headers=headers) as response:
            problem = await response.json(content_type=None)
            assert response.status == status, problem
            assert response.content_type == "application/problem+json"
            assert problem["status"] == status
            if slug:
                assert problem["type"].endswith("/" + slug), problem

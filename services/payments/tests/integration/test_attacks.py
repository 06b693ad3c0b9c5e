"""Defects an adversarial review of payments found, each pinned by the attack that showed it
and what must hold instead."""

from __future__ import annotations

import base64
import json

import pytest

pytestmark = pytest.mark.integration


async def test_a_history_cursor_beyond_64_bits_is_a_400_not_a_500(service):
    user = await service.user("customer")
    await service.fund(user, 100)
    for before in (2**63, 2**64, 10**30):
        raw = json.dumps({"before": before}).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response = await service.call(
            "GET", f"/transactions?cursor={cursor}", token=service.token(user)
        )
        assert response.status == 400, (before, response.status)
        assert response.body["type"].endswith("invalid-cursor")

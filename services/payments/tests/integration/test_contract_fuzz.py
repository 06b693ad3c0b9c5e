"""contracts/http/payments.yaml holds against the running service, reached the way clients
reach it: through a real gateway in front of the service (the shipped route table, rate limits
raised): schemathesis (every check but ``ignored_auth``, bounded, a fixed seed) finds no
server error and no answer the contract does not describe (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from switchyard.testing.contracts import fuzz_contract, gateway_in_front

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


async def test_the_payments_contract_holds_under_fuzzing(
    start_service: Callable[..., Any], settings_overrides: dict[str, Any]
) -> None:
    service = await start_service()
    token = service.keys_server.token("0190a1b2c3d4e5f60718293a4b5c6d7e", ["customer", "admin"])
    async with gateway_in_front(
        "payments", service.server.url, service.keys_server, settings_overrides
    ) as edge:
        result = await fuzz_contract("payments", edge, headers={"Authorization": f"Bearer {token}"})
    assert result.passed, result.report
    assert "Authentication failed" not in result.report, result.report

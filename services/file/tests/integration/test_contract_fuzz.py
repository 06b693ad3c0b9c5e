"""contracts/http/file.yaml holds against the running service, reached the way clients
reach it: through a real gateway in front of the service (the shipped route table, rate limits
raised): schemathesis (every check but ``ignored_auth``, bounded, a fixed seed) finds no
server error and no answer the contract does not describe (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from file_svc.app import create_app
from file_svc.settings import FileSettings
from switchyard.testing import JwksServer
from switchyard.testing.contracts import fuzz_contract, gateway_in_front

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.mark.parametrize("backend", ["local"])  # the storage backends have their own tests
async def test_the_file_contract_holds_under_fuzzing(
    file_settings: Callable[..., FileSettings],
    start_app: Any,
    jwks_server: JwksServer,
    broker_cleanup: None,
    settings_overrides: dict[str, Any],
) -> None:
    server = await start_app(create_app(file_settings()))
    token = jwks_server.token("0190a1b2c3d4e5f60718293a4b5c6d7e", ["customer"])
    async with gateway_in_front("file", server.url, jwks_server, settings_overrides) as edge:
        result = await fuzz_contract("file", edge, headers={"Authorization": f"Bearer {token}"})
    assert result.passed, result.report
    assert "Authentication failed" not in result.report, result.report

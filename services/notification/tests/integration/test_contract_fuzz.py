"""contracts/http/notification.yaml holds against the running service, reached the way
clients reach it: through a real gateway in front of the service (the shipped route table, rate limits
raised): schemathesis (every check but ``ignored_auth``, bounded, a fixed seed) finds no
server error and no answer the contract does not describe (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from switchyard.testing import JwksServer, SmtpSink
from switchyard.testing.contracts import contract_path, fuzz_contract, gateway_in_front

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


async def test_the_notification_contract_holds_under_fuzzing(
    start_service: Callable[..., Any],
    smtp_sink: SmtpSink,
    jwks_server: JwksServer,
    settings_overrides: dict[str, Any],
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    token = jwks_server.token("0190a1b2c3d4e5f60718293a4b5c6d7e", ["customer", "admin"])
    async with gateway_in_front(
        "notification", service.url, jwks_server, settings_overrides
    ) as edge:
        result = await fuzz_contract(
            "notification", edge, headers={"Authorization": f"Bearer {token}"}
        )
    assert result.passed, result.report
    # Every documented operation ran (none dropped by a filter or a schema it could not read).
    paths = yaml.safe_load(contract_path("notification").read_text())["paths"]
    operations = sum(
        m in {"get", "put", "post", "patch", "delete"} for i in paths.values() for m in i
    )
    assert f"{operations} selected / {operations} total" in result.report, result.report
    assert "Authentication failed" not in result.report, result.report

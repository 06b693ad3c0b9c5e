"""contracts/http/auth.yaml holds against the running service: schemathesis (every check but
``ignored_auth``, bounded, a fixed seed) finds no server error and no answer the contract
does not describe (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.testing.contracts import fuzz_contract
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN

from .conftest import STRONG_PASSWORD, AuthClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
ADMIN = "root-fuzz@example.com"


@pytest.fixture
def auth_overrides() -> dict[str, Any]:
    return {"admin_email": ADMIN, "admin_password": STRONG_PASSWORD}


async def test_the_auth_contract_holds_under_fuzzing(auth: AuthClient) -> None:
    admin = await auth.login(ADMIN)
    assert admin.status == 200
    # logout-all ends every session of its caller: fuzz it with a user of its own, so the
    # admin's token (every other operation's) stays valid through the run.
    other = await auth.signed_up("fuzzed@example.com")
    result = await fuzz_contract(
        "auth",
        auth.server.url,
        headers={"Authorization": f"Bearer {admin.body['access_token']}"},
        operation_headers={
            "^/internal/": {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"},
            "^/api/v1/auth/logout-all$": {"Authorization": f"Bearer {other['access_token']}"},
        },
    )
    assert result.passed, result.report
    # Not vacuous: every operation of the contract ran, with a token that worked.
    assert "23 selected / 23 total" in result.report, result.report
    assert "Authentication failed" not in result.report, result.report
